//! Conformance checks of the DMP ID and the batch file registry.

use segmart_domain::pricing::{Cost, CostType, Currency};
use segmart_domain::{FolderId, IdType, Timestamp};

use super::{CatalogFixture, T0, T1, key, provider_and_folder};
use crate::catalog::{
    Catalog, CatalogError, IngestCounts, IngestKind, IngestOutcome, IngestRejection, IngestSource,
    IngestStatus, NewIngestFile, TaxonomySegment,
};

fn delivery(
    provider: segmart_domain::ProviderId,
    kind: IngestKind,
    file_id: &str,
    date: i64,
) -> NewIngestFile {
    NewIngestFile {
        provider,
        kind,
        file_id: file_id.to_owned(),
        dmp_id: "acme".into(),
        file_date: date,
        name: format!("acme.x.{file_id}.{}", kind.name()),
        source: IngestSource::Upload,
        spool_path: Some(format!("/spool/{file_id}")),
        bytes: 10,
        rejection: None,
    }
}

pub(crate) async fn dmp_ids_are_unique_and_found(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let first = catalog.create_provider("A", T0).await.unwrap();
    let second = catalog.create_provider("B", T0).await.unwrap();
    assert_eq!(first.dmp_id, None);
    let before = catalog.generation().await.unwrap();
    let set = catalog
        .set_provider_dmp_id(first.id, Some("acme_dmp-1"))
        .await
        .unwrap();
    assert_eq!(set.dmp_id.as_deref(), Some("acme_dmp-1"));
    assert!(catalog.generation().await.unwrap() > before);
    assert_eq!(
        catalog.provider_by_dmp_id("acme_dmp-1").await.unwrap(),
        Some(set.clone())
    );
    assert_eq!(
        catalog.provider_by_dmp_id("ACME_DMP-1").await.unwrap(),
        None,
        "case-sensitive"
    );
    assert!(matches!(
        catalog
            .set_provider_dmp_id(second.id, Some("acme_dmp-1"))
            .await,
        Err(CatalogError::AlreadyExists(_))
    ));
    assert!(matches!(
        catalog
            .set_provider_dmp_id(second.id, Some("has.dot"))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        catalog.set_provider_dmp_id(second.id, Some("")).await,
        Err(CatalogError::Invalid(_))
    ));
    // Setting the same value again is fine; clearing frees it for another provider.
    catalog
        .set_provider_dmp_id(first.id, Some("acme_dmp-1"))
        .await
        .unwrap();
    catalog.set_provider_dmp_id(first.id, None).await.unwrap();
    let moved = catalog
        .set_provider_dmp_id(second.id, Some("acme_dmp-1"))
        .await
        .unwrap();
    assert_eq!(
        catalog.provider_by_dmp_id("acme_dmp-1").await.unwrap(),
        Some(moved)
    );
    assert!(matches!(
        catalog
            .set_provider_dmp_id(segmart_domain::ProviderId::random(), Some("x"))
            .await,
        Err(CatalogError::NotFound(_))
    ));
}

pub(crate) async fn a_file_id_takes_effect_once(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, _) = provider_and_folder(&catalog).await;
    let generation = catalog.generation().await.unwrap();
    let first = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f1", 100), T0)
        .await
        .unwrap();
    assert_eq!(first.status, IngestStatus::Queued);
    assert_eq!(first.received_at, T0);
    assert_eq!(first.spool_path.as_deref(), Some("/spool/f1"));
    // Registry writes leave the generation (and so every node's caches) alone.
    assert_eq!(catalog.generation().await.unwrap(), generation);

    let again = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f1", 100), T1)
        .await
        .unwrap();
    assert_eq!(again.status, IngestStatus::Duplicate);
    assert_eq!(again.duplicate_of, Some(first.id));
    assert_eq!(again.finished_at, Some(T1));
    assert!(again.id > first.id);

    // The taxonomy of the same prefix is another file.
    let taxonomy = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Taxonomy, "f1", 100), T1)
        .await
        .unwrap();
    assert_eq!(taxonomy.status, IngestStatus::Queued);

    let started = catalog.start_ingest_file(first.id, T1, T1).await.unwrap();
    assert_eq!(started.status, IngestStatus::Applying);
    assert_eq!(started.apply_at, Some(T1));
    // A restart keeps the apply time.
    let later = Timestamp::from_millis(T1.millis() + 5_000);
    let redo = catalog
        .start_ingest_file(first.id, later, later)
        .await
        .unwrap();
    assert_eq!(redo.apply_at, Some(T1));
    assert_eq!(redo.started_at, Some(later));

    let counts = IngestCounts {
        lines_read: 10,
        lines_applied: 7,
        lines_rejected: 2,
        blank_lines: 0,
        memberships_added: 20,
        memberships_removed: 3,
        segments_upserted: 0,
        rejects: vec![("no_segments".into(), 1), ("unknown_segment".into(), 1)],
        unknown_segments: vec![("zzz".into(), 1)],
        check_millis: 4,
        duration_millis: 9,
    };
    let applied = catalog
        .finish_ingest_file(first.id, &IngestOutcome::Applied(counts.clone()), later)
        .await
        .unwrap();
    assert_eq!(applied.status, IngestStatus::Applied);
    assert_eq!(applied.counts, counts);
    assert_eq!(applied.spool_path, None);
    assert_eq!(applied.finished_at, Some(later));
    assert!(matches!(
        catalog
            .finish_ingest_file(first.id, &IngestOutcome::Applied(counts.clone()), later)
            .await,
        Err(CatalogError::NotFound(_))
    ));
    let third = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f1", 100), later)
        .await
        .unwrap();
    assert_eq!(third.status, IngestStatus::Duplicate);
    assert_eq!(third.duplicate_of, Some(first.id));

    let deliveries = catalog.ingest_deliveries(provider.id, "f1").await.unwrap();
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![first.id, again.id, taxonomy.id, third.id]);
    assert_eq!(
        catalog.get_ingest_file(first.id).await.unwrap(),
        Some(applied)
    );
    assert_eq!(catalog.get_ingest_file(9_999_999).await.unwrap(), None);
}

pub(crate) async fn a_rejected_file_id_may_come_again(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, _) = provider_and_folder(&catalog).await;
    let mut refused = delivery(provider.id, IngestKind::Data, "f1", 100);
    refused.rejection = Some(IngestRejection {
        code: "not_gzip".into(),
        message: "not a gzip file".into(),
    });
    let refused = catalog.register_ingest_file(&refused, T0).await.unwrap();
    assert_eq!(refused.status, IngestStatus::Rejected);
    assert_eq!(refused.rejection.as_ref().unwrap().code, "not_gzip");

    let queued = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f1", 100), T0)
        .await
        .unwrap();
    assert_eq!(queued.status, IngestStatus::Queued);
    catalog.start_ingest_file(queued.id, T0, T0).await.unwrap();
    let rejection = IngestRejection {
        code: "truncated_gzip".into(),
        message: "truncated".into(),
    };
    let rejected = catalog
        .finish_ingest_file(
            queued.id,
            &IngestOutcome::Rejected {
                rejection: rejection.clone(),
                counts: IngestCounts::default(),
            },
            T1,
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, IngestStatus::Rejected);
    assert_eq!(rejected.rejection, Some(rejection));
    let fixed = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f1", 100), T1)
        .await
        .unwrap();
    assert_eq!(fixed.status, IngestStatus::Queued);
}

pub(crate) async fn files_apply_in_date_order_and_late_ones_are_refused(
    fixture: impl CatalogFixture,
) {
    let catalog = fixture.open().await;
    let (provider, _) = provider_and_folder(&catalog).await;
    let other = catalog.create_provider("Other", T0).await.unwrap();
    assert_eq!(catalog.next_ingest_file().await.unwrap(), None);
    let late_data = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "b", 200), T0)
        .await
        .unwrap();
    let other_file = catalog
        .register_ingest_file(&delivery(other.id, IngestKind::Data, "o", 50), T0)
        .await
        .unwrap();
    let early_data = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "a", 100), T0)
        .await
        .unwrap();
    let early_taxonomy = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Taxonomy, "a", 100), T0)
        .await
        .unwrap();
    // The provider that waited longest, in DATE order, the taxonomy before its data file.
    let next = catalog.next_ingest_file().await.unwrap().unwrap();
    assert_eq!(next.id, early_taxonomy.id);
    catalog
        .finish_ingest_file(
            next.id,
            &IngestOutcome::Applied(IngestCounts::default()),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        catalog.next_ingest_file().await.unwrap().unwrap().id,
        early_data.id
    );
    catalog
        .start_ingest_file(early_data.id, T0, T0)
        .await
        .unwrap();
    // An applying delivery comes first, whatever else waits.
    assert_eq!(
        catalog.next_ingest_file().await.unwrap().unwrap().id,
        early_data.id
    );
    catalog
        .finish_ingest_file(
            early_data.id,
            &IngestOutcome::Applied(IngestCounts::default()),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        catalog.next_ingest_file().await.unwrap().unwrap().id,
        late_data.id
    );
    catalog
        .finish_ingest_file(
            late_data.id,
            &IngestOutcome::Applied(IngestCounts::default()),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        catalog.next_ingest_file().await.unwrap().unwrap().id,
        other_file.id
    );
    assert_eq!(
        catalog
            .newest_applied_date(provider.id, IngestKind::Data)
            .await
            .unwrap(),
        Some(200)
    );
    assert_eq!(
        catalog
            .newest_applied_date(provider.id, IngestKind::Taxonomy)
            .await
            .unwrap(),
        Some(100)
    );
    assert_eq!(
        catalog
            .newest_applied_date(other.id, IngestKind::Data)
            .await
            .unwrap(),
        None
    );

    let late = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "c", 150), T1)
        .await
        .unwrap();
    assert_eq!(late.status, IngestStatus::Rejected);
    assert_eq!(late.rejection.unwrap().code, "late");
    // The same DATE as the newest applied file is not late.
    let same_date = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "d", 200), T1)
        .await
        .unwrap();
    assert_eq!(same_date.status, IngestStatus::Queued);

    let page = catalog
        .list_ingest_files(provider.id, None, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![same_date.id, late.id]
    );
    let rest = catalog
        .list_ingest_files(provider.id, Some(late.id), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![early_taxonomy.id, early_data.id, late_data.id]
    );
}

pub(crate) async fn a_taxonomy_applies_whole_or_not_at_all(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let existing = catalog
        .create_segment(folder.id, &key("1000"), &super::spec("Old name"), T0)
        .await
        .unwrap();
    let file = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Taxonomy, "t", 100), T0)
        .await
        .unwrap();
    catalog.start_ingest_file(file.id, T0, T0).await.unwrap();
    let priced = Cost {
        cost_type: CostType::Fix,
        value: 1.5,
        currency: Some(Currency::Usd),
    };
    let upserts = vec![
        TaxonomySegment {
            folder: folder.id,
            key: key("1000"),
            name: "Mens 18-24".into(),
            pricing: Some(priced),
            advertisers: Some(vec!["1000".into(), "2000".into()]),
        },
        TaxonomySegment {
            folder: FolderId::random(),
            key: key("1001"),
            name: "Nowhere".into(),
            pricing: None,
            advertisers: None,
        },
    ];
    let counts = IngestCounts {
        segments_upserted: 2,
        ..IngestCounts::default()
    };
    let generation = catalog.generation().await.unwrap();
    assert!(
        catalog
            .apply_taxonomy(file.id, &upserts, &counts, T1)
            .await
            .is_err()
    );
    assert_eq!(
        catalog.get_segment(folder.id, &key("1000")).await.unwrap(),
        Some(existing.clone())
    );
    assert_eq!(catalog.generation().await.unwrap(), generation);
    assert_eq!(
        catalog
            .get_ingest_file(file.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        IngestStatus::Applying
    );

    let upserts = vec![
        upserts[0].clone(),
        TaxonomySegment {
            folder: folder.id,
            key: key("1001"),
            name: "Mens 25-29".into(),
            pricing: None,
            advertisers: None,
        },
    ];
    let (applied, segments) = catalog
        .apply_taxonomy(file.id, &upserts, &counts, T1)
        .await
        .unwrap();
    assert_eq!(applied.status, IngestStatus::Applied);
    assert_eq!(applied.counts.segments_upserted, 2);
    assert!(catalog.generation().await.unwrap() > generation);
    let renamed = &segments[0];
    assert_eq!(renamed.num, existing.num);
    assert_eq!(renamed.spec.name, "Mens 18-24");
    assert_eq!(renamed.spec.ttl_minutes, existing.spec.ttl_minutes);
    assert_eq!(renamed.created_at, T0);
    assert_eq!(renamed.updated_at, T1);
    assert_eq!(renamed.pricing, Some(priced));
    assert_eq!(
        renamed.advertisers,
        Some(vec!["1000".to_string(), "2000".to_string()])
    );
    let created = &segments[1];
    assert_eq!(created.spec.ttl_minutes, 43_200);
    assert!(created.spec.active && created.spec.selectable);
    assert_eq!(created.pricing, None);
    assert_eq!(created.advertisers, None);
    assert_eq!(
        catalog
            .get_segment(folder.id, &key("1001"))
            .await
            .unwrap()
            .as_ref(),
        Some(created)
    );
    assert_eq!(
        catalog
            .get_segment(folder.id, &key("1000"))
            .await
            .unwrap()
            .as_ref(),
        Some(renamed)
    );
    let _ = IdType::Cookie;
}

pub(crate) async fn the_registry_survives_a_reopen(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, _) = provider_and_folder(&catalog).await;
    let provider = catalog
        .set_provider_dmp_id(provider.id, Some("acme"))
        .await
        .unwrap();
    let file = catalog
        .register_ingest_file(&delivery(provider.id, IngestKind::Data, "f", 100), T0)
        .await
        .unwrap();
    let applying = catalog.start_ingest_file(file.id, T1, T1).await.unwrap();
    fixture.close(catalog).await;
    let reopened = fixture.open().await;
    assert_eq!(
        reopened.provider_by_dmp_id("acme").await.unwrap(),
        Some(provider)
    );
    assert_eq!(
        reopened.next_ingest_file().await.unwrap(),
        Some(applying.clone())
    );
    assert_eq!(
        reopened.pending_ingest_files().await.unwrap(),
        vec![applying]
    );
}

pub(crate) async fn default_pricing_is_set_checked_and_cleared(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = catalog.create_provider("A", T0).await.unwrap();
    assert_eq!(provider.default_pricing, None);
    let fix = Cost {
        cost_type: CostType::Fix,
        value: 0.75,
        currency: Some(Currency::Rub),
    };
    let set = catalog
        .set_provider_default_pricing(provider.id, Some(fix))
        .await
        .unwrap();
    assert_eq!(set.default_pricing, Some(fix));
    assert_eq!(catalog.get_provider(provider.id).await.unwrap(), Some(set));
    let too_much = Cost {
        cost_type: CostType::Rate,
        value: 101.0,
        currency: None,
    };
    assert!(matches!(
        catalog
            .set_provider_default_pricing(provider.id, Some(too_much))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    let negative = Cost { value: -1.0, ..fix };
    assert!(matches!(
        catalog
            .set_provider_default_pricing(provider.id, Some(negative))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    let cleared = catalog
        .set_provider_default_pricing(provider.id, None)
        .await
        .unwrap();
    assert_eq!(cleared.default_pricing, None);
}
