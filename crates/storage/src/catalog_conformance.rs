//! The behaviour every [`Catalog`] backend must show, written once.
//!
//! Each check is a generic `async fn` taking a [`CatalogFixture`]; the
//! [`catalog_conformance_tests!`] macro turns all of them into `#[tokio::test]`s for one
//! backend, so adding a backend is one line:
//!
//! ```ignore
//! crate::catalog_conformance::catalog_conformance_tests!(FileFixture::new());
//! ```
//!
//! The expression is evaluated afresh for every test and must yield a fixture over an empty
//! store.

use segmart_domain::segment::{Segment, SegmentSpec};
use segmart_domain::{
    ClientId, FieldError, FolderId, IdType, Permission, PermissionSet, ProviderId, SegmentKey,
    Timestamp,
};

use crate::catalog::{Catalog, CatalogError, Folder, Provider};

mod ingest;
pub(crate) use ingest::*;

/// How the suite reaches one backend.
pub(crate) trait CatalogFixture {
    type Catalog: Catalog;

    /// Opens the fixture's store. Opening it again after [`CatalogFixture::close`] must show
    /// everything committed before, as a restarted process would see it.
    async fn open(&self) -> Self::Catalog;

    /// Releases a catalog handle as a process shutting down would.
    async fn close(&self, catalog: Self::Catalog) {
        drop(catalog);
    }
}

/// Generates one `#[tokio::test]` per conformance check, each over `$fixture`.
macro_rules! catalog_conformance_tests {
    ($fixture:expr) => {
        $crate::catalog_conformance::catalog_conformance_tests!(@each $fixture;
            providers_are_created_found_and_listed,
            ensure_provider_is_idempotent,
            unknown_ids_read_as_absent,
            folders_need_an_existing_provider,
            folder_numbers_are_dense_from_one,
            folders_keep_their_id_type,
            ensure_folder_is_idempotent,
            folders_list_by_provider,
            clients_are_created_found_and_listed,
            clients_need_an_existing_provider,
            rotation_replaces_the_hash_and_bumps_the_client_generation,
            revocation_marks_the_client_revoked,
            segments_round_trip_every_field,
            duplicate_segments_are_refused,
            segments_need_an_existing_folder,
            segment_keys_are_case_sensitive,
            segment_numbers_are_unique_across_folders,
            put_segment_creates_then_replaces_keeping_number_and_creation_date,
            parents_must_exist_in_the_same_folder,
            parents_must_not_create_a_loop,
            segment_pages_follow_byte_order_and_exclusive_cursors,
            segment_page_limits,
            segments_are_counted_per_folder,
            all_segments_spans_every_folder,
            settings_are_stored_and_replaced,
            generation_grows_with_every_committed_change,
            failed_writes_change_nothing,
            everything_survives_a_reopen,
            dmp_ids_are_unique_and_found,
            a_file_id_takes_effect_once,
            a_rejected_file_id_may_come_again,
            files_apply_in_date_order_and_late_ones_are_refused,
            a_taxonomy_applies_whole_or_not_at_all,
            the_registry_survives_a_reopen,
            default_pricing_is_set_checked_and_cleared,
        );
    };
    (@each $fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $crate::catalog_conformance::$check($fixture).await;
            }
        )+
    };
}
pub(crate) use catalog_conformance_tests;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const T1: Timestamp = Timestamp::from_millis(1_700_000_060_000);

fn key(raw: &str) -> SegmentKey {
    SegmentKey::parse(raw).unwrap()
}

fn spec(name: &str) -> SegmentSpec {
    SegmentSpec {
        name: name.to_owned(),
        description: String::new(),
        price: 0.0,
        ttl_minutes: 43_200,
        active: true,
        selectable: true,
        parent: None,
    }
}

fn child_of(name: &str, parent: &str) -> SegmentSpec {
    SegmentSpec {
        parent: Some(key(parent)),
        ..spec(name)
    }
}

async fn provider_and_folder(catalog: &impl Catalog) -> (Provider, Folder) {
    let provider = catalog.create_provider("Acme DMP", T0).await.unwrap();
    let folder = catalog
        .create_folder(provider.id, "cookies", IdType::Cookie, T0)
        .await
        .unwrap();
    (provider, folder)
}

fn keys(segments: &[Segment]) -> Vec<&str> {
    segments.iter().map(|s| s.key.as_str()).collect()
}

fn assert_not_found(result: Result<impl std::fmt::Debug, CatalogError>, expected: &str) {
    match result {
        Err(CatalogError::NotFound(what)) => assert_eq!(what, expected),
        other => panic!("expected NotFound({expected}), got {other:?}"),
    }
}

fn assert_invalid_parent(result: Result<impl std::fmt::Debug, CatalogError>, message: &str) {
    match result {
        Err(CatalogError::Invalid(FieldError {
            field,
            message: got,
        })) => {
            assert_eq!(field, "parentSegmentId");
            assert_eq!(got, message);
        }
        other => panic!("expected an invalid parentSegmentId, got {other:?}"),
    }
}

pub(crate) async fn providers_are_created_found_and_listed(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    assert!(catalog.list_providers().await.unwrap().is_empty());
    let first = catalog.create_provider("Acme DMP", T0).await.unwrap();
    let second = catalog.create_provider("Other DMP", T1).await.unwrap();
    assert_ne!(first.id, second.id);
    assert_eq!(first.name, "Acme DMP");
    assert_eq!(first.created_at, T0);
    assert_eq!(
        catalog.get_provider(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(catalog.list_providers().await.unwrap(), vec![first, second]);
}

pub(crate) async fn ensure_provider_is_idempotent(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let id = ProviderId::random();
    let created = catalog.ensure_provider(id, "Demo", T0).await.unwrap();
    assert_eq!(created.id, id);
    assert_eq!(created.name, "Demo");
    let again = catalog.ensure_provider(id, "Renamed", T1).await.unwrap();
    assert_eq!(again, created, "an existing provider is returned unchanged");
    assert_eq!(catalog.list_providers().await.unwrap(), vec![created]);
}

pub(crate) async fn unknown_ids_read_as_absent(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let folder = FolderId::random();
    assert_eq!(
        catalog.get_provider(ProviderId::random()).await.unwrap(),
        None
    );
    assert_eq!(catalog.get_folder(folder).await.unwrap(), None);
    assert_eq!(catalog.get_client(ClientId::random()).await.unwrap(), None);
    assert_eq!(catalog.get_segment(folder, &key("s")).await.unwrap(), None);
    assert!(
        catalog
            .list_segments(folder, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(catalog.count_segments(folder).await.unwrap(), 0);
    assert!(
        catalog
            .list_folders(Some(ProviderId::random()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        catalog
            .list_clients(Some(ProviderId::random()))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(catalog.get_setting("nothing").await.unwrap(), None);
}

pub(crate) async fn folders_need_an_existing_provider(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = ProviderId::random();
    assert_not_found(
        catalog
            .create_folder(provider, "f", IdType::Cookie, T0)
            .await,
        &format!("provider {provider}"),
    );
    assert_not_found(
        catalog
            .ensure_folder(FolderId::random(), provider, "f", IdType::Cookie, T0)
            .await,
        &format!("provider {provider}"),
    );
    assert!(catalog.list_folders(None).await.unwrap().is_empty());
}

pub(crate) async fn folder_numbers_are_dense_from_one(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let acme = catalog.create_provider("Acme", T0).await.unwrap();
    let other = catalog.create_provider("Other", T0).await.unwrap();
    let mut numbers = Vec::new();
    for (index, provider) in [acme.id, other.id, acme.id, other.id]
        .into_iter()
        .enumerate()
    {
        let folder = catalog
            .create_folder(provider, &format!("folder {index}"), IdType::Ppid, T0)
            .await
            .unwrap();
        numbers.push(folder.num);
    }
    let ensured = catalog
        .ensure_folder(FolderId::random(), acme.id, "ensured", IdType::Ppid, T0)
        .await
        .unwrap();
    numbers.push(ensured.num);
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
}

pub(crate) async fn folders_keep_their_id_type(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = catalog.create_provider("Acme", T0).await.unwrap();
    let id_types = [
        IdType::Cookie,
        IdType::Maid,
        IdType::Ppid,
        IdType::ExtendedId {
            vendor: "id5".to_owned(),
        },
        IdType::Ip,
    ];
    for id_type in id_types {
        let created = catalog
            .create_folder(provider.id, "folder", id_type.clone(), T1)
            .await
            .unwrap();
        assert_eq!(created.id_type, id_type);
        assert_eq!(created.provider, provider.id);
        assert_eq!(created.name, "folder");
        assert_eq!(created.created_at, T1);
        assert_eq!(catalog.get_folder(created.id).await.unwrap(), Some(created));
    }
}

pub(crate) async fn ensure_folder_is_idempotent(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = catalog.create_provider("Acme", T0).await.unwrap();
    let id = FolderId::random();
    let created = catalog
        .ensure_folder(id, provider.id, "demo", IdType::Maid, T0)
        .await
        .unwrap();
    assert_eq!(created.id, id);
    assert_eq!(created.id_type, IdType::Maid);
    let again = catalog
        .ensure_folder(id, provider.id, "renamed", IdType::Cookie, T1)
        .await
        .unwrap();
    assert_eq!(again, created, "an existing folder is returned unchanged");
    assert_eq!(catalog.list_folders(None).await.unwrap(), vec![created]);
}

pub(crate) async fn folders_list_by_provider(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let acme = catalog.create_provider("Acme", T0).await.unwrap();
    let other = catalog.create_provider("Other", T0).await.unwrap();
    let a1 = catalog
        .create_folder(acme.id, "a1", IdType::Cookie, T0)
        .await
        .unwrap();
    let o1 = catalog
        .create_folder(other.id, "o1", IdType::Cookie, T0)
        .await
        .unwrap();
    let a2 = catalog
        .create_folder(acme.id, "a2", IdType::Ip, T0)
        .await
        .unwrap();
    assert_eq!(
        catalog.list_folders(Some(acme.id)).await.unwrap(),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        catalog.list_folders(Some(other.id)).await.unwrap(),
        vec![o1.clone()]
    );
    assert_eq!(catalog.list_folders(None).await.unwrap(), vec![a1, o1, a2]);
}

pub(crate) async fn clients_are_created_found_and_listed(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let acme = catalog.create_provider("Acme", T0).await.unwrap();
    let other = catalog.create_provider("Other", T0).await.unwrap();
    let read_only = PermissionSet::EMPTY
        .with(Permission::ProfileRead)
        .with(Permission::SegmentRead);
    let client = catalog
        .create_client(acme.id, "ingest", read_only, "$argon2id$hash-1", T1)
        .await
        .unwrap();
    assert_eq!(client.provider, acme.id);
    assert_eq!(client.name, "ingest");
    assert_eq!(client.permissions, read_only);
    assert_eq!(client.secret_hash, "$argon2id$hash-1");
    assert_eq!(client.generation, 0);
    assert!(!client.revoked);
    assert_eq!(client.created_at, T1);
    assert_eq!(
        catalog.get_client(client.id).await.unwrap(),
        Some(client.clone())
    );

    let everything = catalog
        .create_client(
            other.id,
            "admin",
            PermissionSet::ALL,
            "$argon2id$hash-2",
            T1,
        )
        .await
        .unwrap();
    assert_eq!(everything.permissions, PermissionSet::ALL);
    let nothing = catalog
        .create_client(
            acme.id,
            "none",
            PermissionSet::EMPTY,
            "$argon2id$hash-3",
            T1,
        )
        .await
        .unwrap();
    assert_eq!(nothing.permissions, PermissionSet::EMPTY);

    let mut acme_clients = catalog.list_clients(Some(acme.id)).await.unwrap();
    acme_clients.sort_by_key(|c| c.name.clone());
    assert_eq!(acme_clients, vec![client.clone(), nothing.clone()]);
    assert_eq!(
        catalog.list_clients(Some(other.id)).await.unwrap(),
        vec![everything]
    );
    assert_eq!(catalog.list_clients(None).await.unwrap().len(), 3);
}

pub(crate) async fn clients_need_an_existing_provider(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = ProviderId::random();
    assert_not_found(
        catalog
            .create_client(provider, "c", PermissionSet::ALL, "hash", T0)
            .await,
        &format!("provider {provider}"),
    );
    assert!(catalog.list_clients(None).await.unwrap().is_empty());
}

pub(crate) async fn rotation_replaces_the_hash_and_bumps_the_client_generation(
    fixture: impl CatalogFixture,
) {
    let catalog = fixture.open().await;
    let provider = catalog.create_provider("Acme", T0).await.unwrap();
    let client = catalog
        .create_client(provider.id, "c", PermissionSet::ALL, "old", T0)
        .await
        .unwrap();
    let rotated = catalog.rotate_client(client.id, "new").await.unwrap();
    assert_eq!(rotated.secret_hash, "new");
    assert_eq!(rotated.generation, client.generation + 1);
    assert_eq!(
        (rotated.id, rotated.created_at),
        (client.id, client.created_at)
    );
    let twice = catalog.rotate_client(client.id, "newer").await.unwrap();
    assert_eq!(twice.generation, client.generation + 2);
    assert_eq!(catalog.get_client(client.id).await.unwrap(), Some(twice));

    let unknown = ClientId::random();
    assert_not_found(
        catalog.rotate_client(unknown, "x").await,
        &format!("client {unknown}"),
    );
}

pub(crate) async fn revocation_marks_the_client_revoked(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let provider = catalog.create_provider("Acme", T0).await.unwrap();
    let client = catalog
        .create_client(provider.id, "c", PermissionSet::ALL, "hash", T0)
        .await
        .unwrap();
    let revoked = catalog.revoke_client(client.id).await.unwrap();
    assert!(revoked.revoked);
    assert_eq!(
        revoked,
        crate::catalog::OAuthClient {
            revoked: true,
            ..client.clone()
        },
        "revocation changes nothing else"
    );
    assert_eq!(catalog.get_client(client.id).await.unwrap(), Some(revoked));
    let rotated = catalog.rotate_client(client.id, "new").await.unwrap();
    assert!(rotated.revoked, "rotation does not lift a revocation");

    let unknown = ClientId::random();
    assert_not_found(
        catalog.revoke_client(unknown).await,
        &format!("client {unknown}"),
    );
}

pub(crate) async fn segments_round_trip_every_field(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    catalog
        .create_segment(folder.id, &key("root"), &spec("Root"), T0)
        .await
        .unwrap();
    let long_key = key(&"é".repeat(100));
    let full = SegmentSpec {
        name: "Sport fans — 🏟".to_owned(),
        description: "d".repeat(1000),
        price: 0.15,
        ttl_minutes: 2_147_483_647,
        active: false,
        selectable: false,
        parent: Some(key("root")),
    };
    let created = catalog
        .create_segment(folder.id, &long_key, &full, T1)
        .await
        .unwrap();
    assert_eq!(created.folder, folder.id);
    assert_eq!(created.key, long_key);
    assert_eq!(created.spec, full);
    assert_eq!((created.created_at, created.updated_at), (T1, T1));
    assert_eq!(
        catalog.get_segment(folder.id, &long_key).await.unwrap(),
        Some(created.clone())
    );

    let minimal = SegmentSpec {
        ttl_minutes: 1,
        price: 1234.5678,
        ..spec("Minimal")
    };
    let other = catalog
        .create_segment(folder.id, &key("minimal"), &minimal, T0)
        .await
        .unwrap();
    assert_eq!(other.spec, minimal);
    assert_ne!(other.num, created.num);
}

pub(crate) async fn duplicate_segments_are_refused(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    let original = catalog
        .create_segment(folder.id, &key("dup"), &spec("First"), T0)
        .await
        .unwrap();
    match catalog
        .create_segment(folder.id, &key("dup"), &spec("Second"), T1)
        .await
    {
        Err(CatalogError::AlreadyExists(what)) => assert_eq!(what, "segment dup"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        catalog.get_segment(folder.id, &key("dup")).await.unwrap(),
        Some(original)
    );
}

pub(crate) async fn segments_need_an_existing_folder(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let missing = FolderId::random();
    let expected = format!("folder {missing}");
    assert_not_found(
        catalog
            .create_segment(missing, &key("s"), &spec("S"), T0)
            .await,
        &expected,
    );
    assert_not_found(
        catalog
            .put_segment(missing, &key("s"), &spec("S"), T0)
            .await,
        &expected,
    );
    // The folder is checked before the parent.
    assert_not_found(
        catalog
            .create_segment(missing, &key("s"), &child_of("S", "p"), T0)
            .await,
        &expected,
    );
    assert!(catalog.all_segments().await.unwrap().is_empty());
}

pub(crate) async fn segment_keys_are_case_sensitive(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    let upper = catalog
        .create_segment(folder.id, &key("Abc"), &spec("upper"), T0)
        .await
        .unwrap();
    let lower = catalog
        .create_segment(folder.id, &key("abc"), &spec("lower"), T0)
        .await
        .unwrap();
    assert_ne!(upper.num, lower.num);
    assert_eq!(
        catalog
            .get_segment(folder.id, &key("Abc"))
            .await
            .unwrap()
            .unwrap()
            .spec
            .name,
        "upper"
    );
    assert_eq!(
        catalog
            .get_segment(folder.id, &key("abc"))
            .await
            .unwrap()
            .unwrap()
            .spec
            .name,
        "lower"
    );
    assert_eq!(
        catalog.get_segment(folder.id, &key("ABC")).await.unwrap(),
        None
    );
    assert_eq!(catalog.count_segments(folder.id).await.unwrap(), 2);
    // A parent is matched case-sensitively too.
    assert_invalid_parent(
        catalog
            .create_segment(folder.id, &key("child"), &child_of("c", "ABC"), T0)
            .await,
        "segment ABC does not exist in this folder",
    );
}

pub(crate) async fn segment_numbers_are_unique_across_folders(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, first) = provider_and_folder(&catalog).await;
    let second = catalog
        .create_folder(provider.id, "second", IdType::Maid, T0)
        .await
        .unwrap();
    let mut numbers = Vec::new();
    for (folder, raw) in [
        (first.id, "same"),
        (second.id, "same"),
        (first.id, "x"),
        (second.id, "y"),
    ] {
        let segment = catalog
            .create_segment(folder, &key(raw), &spec(raw), T0)
            .await
            .unwrap();
        numbers.push(segment.num);
    }
    let (put, _) = catalog
        .put_segment(second.id, &key("z"), &spec("z"), T0)
        .await
        .unwrap();
    numbers.push(put.num);
    let mut unique = numbers.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), numbers.len(), "numbers {numbers:?} repeat");
    // The same key in two folders is two segments.
    let a = catalog
        .get_segment(first.id, &key("same"))
        .await
        .unwrap()
        .unwrap();
    let b = catalog
        .get_segment(second.id, &key("same"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a.num, b.num);
    assert_eq!((a.folder, b.folder), (first.id, second.id));
}

pub(crate) async fn put_segment_creates_then_replaces_keeping_number_and_creation_date(
    fixture: impl CatalogFixture,
) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    let (created, was_created) = catalog
        .put_segment(folder.id, &key("s"), &spec("Before"), T0)
        .await
        .unwrap();
    assert!(was_created);
    assert_eq!((created.created_at, created.updated_at), (T0, T0));
    catalog
        .create_segment(folder.id, &key("parent"), &spec("Parent"), T0)
        .await
        .unwrap();

    let replacement = SegmentSpec {
        description: "now with a parent".to_owned(),
        price: 2.5,
        ttl_minutes: 60,
        active: false,
        selectable: false,
        ..child_of("After", "parent")
    };
    let (replaced, was_created) = catalog
        .put_segment(folder.id, &key("s"), &replacement, T1)
        .await
        .unwrap();
    assert!(!was_created);
    assert_eq!(replaced.num, created.num);
    assert_eq!(replaced.created_at, T0);
    assert_eq!(replaced.updated_at, T1);
    assert_eq!(replaced.spec, replacement);
    assert_eq!(
        catalog.get_segment(folder.id, &key("s")).await.unwrap(),
        Some(replaced.clone())
    );

    // Every field is replaced, including clearing the parent.
    let (cleared, _) = catalog
        .put_segment(folder.id, &key("s"), &spec("Cleared"), T1)
        .await
        .unwrap();
    assert_eq!(cleared.spec, spec("Cleared"));
    assert_eq!(cleared.num, created.num);
    assert_eq!(catalog.count_segments(folder.id).await.unwrap(), 2);
}

pub(crate) async fn parents_must_exist_in_the_same_folder(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let elsewhere = catalog
        .create_folder(provider.id, "elsewhere", IdType::Cookie, T0)
        .await
        .unwrap();
    catalog
        .create_segment(elsewhere.id, &key("p"), &spec("P elsewhere"), T0)
        .await
        .unwrap();
    let missing = "segment p does not exist in this folder";
    assert_invalid_parent(
        catalog
            .create_segment(folder.id, &key("c"), &child_of("C", "p"), T0)
            .await,
        missing,
    );
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("c"), &child_of("C", "p"), T0)
            .await,
        missing,
    );
    assert_eq!(catalog.count_segments(folder.id).await.unwrap(), 0);

    catalog
        .create_segment(folder.id, &key("p"), &spec("P"), T0)
        .await
        .unwrap();
    let child = catalog
        .create_segment(folder.id, &key("c"), &child_of("C", "p"), T0)
        .await
        .unwrap();
    assert_eq!(child.spec.parent, Some(key("p")));
    let (grandchild, _) = catalog
        .put_segment(folder.id, &key("g"), &child_of("G", "c"), T0)
        .await
        .unwrap();
    assert_eq!(grandchild.spec.parent, Some(key("c")));

    // A segment cannot name itself, whether it exists yet or not.
    let own = "segment n cannot be its own parent";
    assert_invalid_parent(
        catalog
            .create_segment(folder.id, &key("n"), &child_of("N", "n"), T0)
            .await,
        own,
    );
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("n"), &child_of("N", "n"), T0)
            .await,
        own,
    );
}

pub(crate) async fn parents_must_not_create_a_loop(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    // a ← b ← c ← d, and x on its own.
    catalog
        .create_segment(folder.id, &key("a"), &spec("A"), T0)
        .await
        .unwrap();
    catalog
        .create_segment(folder.id, &key("b"), &child_of("B", "a"), T0)
        .await
        .unwrap();
    catalog
        .create_segment(folder.id, &key("c"), &child_of("C", "b"), T0)
        .await
        .unwrap();
    catalog
        .create_segment(folder.id, &key("d"), &child_of("D", "c"), T0)
        .await
        .unwrap();
    catalog
        .create_segment(folder.id, &key("x"), &spec("X"), T0)
        .await
        .unwrap();

    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("a"), &child_of("A", "a"), T1)
            .await,
        "segment a cannot be its own parent",
    );
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("a"), &child_of("A", "b"), T1)
            .await,
        "segment b is a descendant of a; the hierarchy must not loop",
    );
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("a"), &child_of("A", "d"), T1)
            .await,
        "segment d is a descendant of a; the hierarchy must not loop",
    );
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("b"), &child_of("B", "d"), T1)
            .await,
        "segment d is a descendant of b; the hierarchy must not loop",
    );
    assert_eq!(
        catalog
            .get_segment(folder.id, &key("a"))
            .await
            .unwrap()
            .unwrap()
            .spec
            .parent,
        None,
        "a refused change leaves the segment as it was"
    );

    // Moving within the tree without a loop is fine: a sibling, an ancestor, another root.
    let (moved, _) = catalog
        .put_segment(folder.id, &key("d"), &child_of("D", "a"), T1)
        .await
        .unwrap();
    assert_eq!(moved.spec.parent, Some(key("a")));
    catalog
        .put_segment(folder.id, &key("a"), &child_of("A", "x"), T1)
        .await
        .unwrap();
    catalog
        .put_segment(folder.id, &key("c"), &child_of("C", "d"), T1)
        .await
        .unwrap();
    assert_invalid_parent(
        catalog
            .put_segment(folder.id, &key("x"), &child_of("X", "c"), T1)
            .await,
        "segment c is a descendant of x; the hierarchy must not loop",
    );
}

pub(crate) async fn segment_pages_follow_byte_order_and_exclusive_cursors(
    fixture: impl CatalogFixture,
) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let other = catalog
        .create_folder(provider.id, "other", IdType::Cookie, T0)
        .await
        .unwrap();
    catalog
        .create_segment(other.id, &key("a0"), &spec("elsewhere"), T0)
        .await
        .unwrap();
    let inserted = ["b", "B", "a", "_", "A", "a-1", "Z", "é", "10", "9", "aa"];
    for raw in inserted {
        catalog
            .create_segment(folder.id, &key(raw), &spec(raw), T0)
            .await
            .unwrap();
    }
    // Byte order: digits, upper case, '_', lower case, then non-ASCII.
    let expected = ["10", "9", "A", "B", "Z", "_", "a", "a-1", "aa", "b", "é"];

    let everything = catalog.list_segments(folder.id, None, 100).await.unwrap();
    assert_eq!(keys(&everything), expected);

    // Walking with pages of every size visits each segment once, in order.
    for page_size in 1..=12u32 {
        let mut seen = Vec::new();
        let mut cursor: Option<SegmentKey> = None;
        loop {
            let page = catalog
                .list_segments(folder.id, cursor.as_ref(), page_size)
                .await
                .unwrap();
            assert!(page.len() <= page_size as usize);
            let Some(last) = page.last() else { break };
            cursor = Some(last.key.clone());
            seen.extend(page.iter().map(|s| s.key.as_str().to_owned()));
        }
        assert_eq!(seen, expected, "page size {page_size}");
    }

    // The cursor is exclusive and need not exist.
    let after_a = catalog
        .list_segments(folder.id, Some(&key("a")), 2)
        .await
        .unwrap();
    assert_eq!(keys(&after_a), ["a-1", "aa"]);
    let after_gap = catalog
        .list_segments(folder.id, Some(&key("a0")), 2)
        .await
        .unwrap();
    assert_eq!(keys(&after_gap), ["aa", "b"]);
    let after_upper_a = catalog
        .list_segments(folder.id, Some(&key("A")), 1)
        .await
        .unwrap();
    assert_eq!(keys(&after_upper_a), ["B"]);
    let after_last = catalog
        .list_segments(folder.id, Some(&key("é")), 10)
        .await
        .unwrap();
    assert!(after_last.is_empty());
    let before_first = catalog
        .list_segments(folder.id, Some(&key("0")), 1)
        .await
        .unwrap();
    assert_eq!(keys(&before_first), ["10"]);
}

pub(crate) async fn segment_page_limits(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (_, folder) = provider_and_folder(&catalog).await;
    assert!(
        catalog
            .list_segments(folder.id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for raw in ["s1", "s2", "s3"] {
        catalog
            .create_segment(folder.id, &key(raw), &spec(raw), T0)
            .await
            .unwrap();
    }
    assert!(
        catalog
            .list_segments(folder.id, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        catalog
            .list_segments(folder.id, None, 3)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        catalog
            .list_segments(folder.id, None, u32::MAX)
            .await
            .unwrap()
            .len(),
        3
    );
}

pub(crate) async fn segments_are_counted_per_folder(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let other = catalog
        .create_folder(provider.id, "other", IdType::Cookie, T0)
        .await
        .unwrap();
    assert_eq!(catalog.count_segments(folder.id).await.unwrap(), 0);
    for index in 0..5 {
        let raw = format!("s{index}");
        catalog
            .create_segment(folder.id, &key(&raw), &spec(&raw), T0)
            .await
            .unwrap();
    }
    catalog
        .create_segment(other.id, &key("s0"), &spec("s0"), T0)
        .await
        .unwrap();
    // Replacing is not adding.
    catalog
        .put_segment(folder.id, &key("s0"), &spec("again"), T1)
        .await
        .unwrap();
    assert_eq!(catalog.count_segments(folder.id).await.unwrap(), 5);
    assert_eq!(catalog.count_segments(other.id).await.unwrap(), 1);
}

pub(crate) async fn all_segments_spans_every_folder(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let other = catalog
        .create_folder(provider.id, "other", IdType::Cookie, T0)
        .await
        .unwrap();
    let mut expected = vec![
        catalog
            .create_segment(folder.id, &key("a"), &spec("a"), T0)
            .await
            .unwrap(),
        catalog
            .create_segment(other.id, &key("a"), &spec("a"), T0)
            .await
            .unwrap(),
        catalog
            .create_segment(folder.id, &key("b"), &child_of("b", "a"), T0)
            .await
            .unwrap(),
    ];
    let mut all = catalog.all_segments().await.unwrap();
    all.sort_by_key(|s| s.num);
    expected.sort_by_key(|s| s.num);
    assert_eq!(all, expected);
}

pub(crate) async fn settings_are_stored_and_replaced(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    assert_eq!(catalog.get_setting("region").await.unwrap(), None);
    catalog.set_setting("region", "eu-west").await.unwrap();
    catalog.set_setting("Region", "other").await.unwrap();
    assert_eq!(
        catalog.get_setting("region").await.unwrap().as_deref(),
        Some("eu-west")
    );
    catalog.set_setting("region", "").await.unwrap();
    assert_eq!(
        catalog.get_setting("region").await.unwrap().as_deref(),
        Some("")
    );
    assert_eq!(
        catalog.get_setting("Region").await.unwrap().as_deref(),
        Some("other")
    );
}

pub(crate) async fn generation_grows_with_every_committed_change(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let mut last = catalog.generation().await.unwrap();
    macro_rules! assert_grew {
        ($what:literal) => {
            let now = catalog.generation().await.unwrap();
            assert!(now > last, "{} left the generation at {}", $what, now);
            last = now;
        };
    }
    macro_rules! assert_same {
        ($what:literal) => {
            let now = catalog.generation().await.unwrap();
            assert_eq!(now, last, "{} changed the generation", $what);
        };
    }

    let provider = catalog.create_provider("Acme", T0).await.unwrap();
    assert_grew!("create_provider");
    let demo = ProviderId::random();
    catalog.ensure_provider(demo, "Demo", T0).await.unwrap();
    assert_grew!("ensure_provider creating");
    catalog.ensure_provider(demo, "Demo", T0).await.unwrap();
    assert_same!("ensure_provider finding");

    let folder = catalog
        .create_folder(provider.id, "f", IdType::Cookie, T0)
        .await
        .unwrap();
    assert_grew!("create_folder");
    let demo_folder = FolderId::random();
    catalog
        .ensure_folder(demo_folder, demo, "d", IdType::Cookie, T0)
        .await
        .unwrap();
    assert_grew!("ensure_folder creating");
    catalog
        .ensure_folder(demo_folder, demo, "d", IdType::Cookie, T0)
        .await
        .unwrap();
    assert_same!("ensure_folder finding");

    let client = catalog
        .create_client(provider.id, "c", PermissionSet::ALL, "h", T0)
        .await
        .unwrap();
    assert_grew!("create_client");
    catalog.rotate_client(client.id, "h2").await.unwrap();
    assert_grew!("rotate_client");
    catalog.revoke_client(client.id).await.unwrap();
    assert_grew!("revoke_client");

    catalog
        .create_segment(folder.id, &key("s"), &spec("S"), T0)
        .await
        .unwrap();
    assert_grew!("create_segment");
    catalog
        .put_segment(folder.id, &key("t"), &spec("T"), T0)
        .await
        .unwrap();
    assert_grew!("put_segment creating");
    catalog
        .put_segment(folder.id, &key("t"), &child_of("T", "s"), T1)
        .await
        .unwrap();
    assert_grew!("put_segment replacing");

    catalog.set_setting("k", "v").await.unwrap();
    assert_grew!("set_setting");

    catalog.get_provider(provider.id).await.unwrap();
    catalog.list_providers().await.unwrap();
    catalog.get_folder(folder.id).await.unwrap();
    catalog.list_folders(None).await.unwrap();
    catalog.get_client(client.id).await.unwrap();
    catalog.list_clients(None).await.unwrap();
    catalog.get_segment(folder.id, &key("s")).await.unwrap();
    catalog.list_segments(folder.id, None, 10).await.unwrap();
    catalog.count_segments(folder.id).await.unwrap();
    catalog.all_segments().await.unwrap();
    catalog.get_setting("k").await.unwrap();
    assert_same!("reading");
}

pub(crate) async fn failed_writes_change_nothing(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    catalog
        .create_segment(folder.id, &key("s"), &spec("S"), T0)
        .await
        .unwrap();
    let generation = catalog.generation().await.unwrap();
    let segments = catalog.all_segments().await.unwrap();
    let folders = catalog.list_folders(None).await.unwrap();

    let ghost_provider = ProviderId::random();
    let ghost_folder = FolderId::random();
    let failures = [
        catalog
            .create_segment(folder.id, &key("s"), &spec("dup"), T1)
            .await
            .err(),
        catalog
            .create_segment(ghost_folder, &key("n"), &spec("N"), T1)
            .await
            .err(),
        catalog
            .put_segment(ghost_folder, &key("n"), &spec("N"), T1)
            .await
            .err(),
        catalog
            .create_segment(folder.id, &key("n"), &child_of("N", "ghost"), T1)
            .await
            .err(),
        catalog
            .put_segment(folder.id, &key("s"), &child_of("S", "s"), T1)
            .await
            .err(),
        catalog
            .create_folder(ghost_provider, "f", IdType::Ip, T1)
            .await
            .err(),
        catalog
            .ensure_folder(ghost_folder, ghost_provider, "f", IdType::Ip, T1)
            .await
            .err(),
        catalog
            .create_client(ghost_provider, "c", PermissionSet::ALL, "h", T1)
            .await
            .err(),
        catalog.rotate_client(ClientId::random(), "h").await.err(),
        catalog.revoke_client(ClientId::random()).await.err(),
    ];
    for (index, failure) in failures.iter().enumerate() {
        assert!(failure.is_some(), "write {index} should have failed");
    }
    assert_eq!(catalog.generation().await.unwrap(), generation);
    assert_eq!(catalog.all_segments().await.unwrap(), segments);
    assert_eq!(catalog.list_folders(None).await.unwrap(), folders);
    assert!(
        catalog
            .list_clients(Some(provider.id))
            .await
            .unwrap()
            .is_empty()
    );
    // A folder created after the failures still gets the next dense number.
    let next = catalog
        .create_folder(provider.id, "next", IdType::Ip, T1)
        .await
        .unwrap();
    assert_eq!(next.num, folder.num + 1);
}

pub(crate) async fn everything_survives_a_reopen(fixture: impl CatalogFixture) {
    let catalog = fixture.open().await;
    let (provider, folder) = provider_and_folder(&catalog).await;
    let client = catalog
        .create_client(provider.id, "c", PermissionSet::ALL, "h", T0)
        .await
        .unwrap();
    let client = catalog.rotate_client(client.id, "h2").await.unwrap();
    let root = catalog
        .create_segment(folder.id, &key("root"), &spec("Root"), T0)
        .await
        .unwrap();
    let (leaf, _) = catalog
        .put_segment(folder.id, &key("leaf"), &child_of("Leaf", "root"), T1)
        .await
        .unwrap();
    catalog.set_setting("k", "v").await.unwrap();
    let generation = catalog.generation().await.unwrap();
    fixture.close(catalog).await;

    let reopened = fixture.open().await;
    assert_eq!(
        reopened.list_providers().await.unwrap(),
        vec![provider.clone()]
    );
    assert_eq!(
        reopened.list_folders(None).await.unwrap(),
        vec![folder.clone()]
    );
    assert_eq!(reopened.list_clients(None).await.unwrap(), vec![client]);
    let mut segments = reopened.all_segments().await.unwrap();
    segments.sort_by_key(|s| s.num);
    assert_eq!(segments, vec![root.clone(), leaf]);
    assert_eq!(
        reopened.get_setting("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(reopened.generation().await.unwrap(), generation);

    // Numbers continue where they stopped and are not reused.
    let next_folder = reopened
        .create_folder(provider.id, "next", IdType::Cookie, T1)
        .await
        .unwrap();
    assert_eq!(next_folder.num, folder.num + 1);
    let next_segment = reopened
        .create_segment(folder.id, &key("next"), &spec("Next"), T1)
        .await
        .unwrap();
    assert!(next_segment.num > root.num);
    assert!(reopened.generation().await.unwrap() > generation);
}
