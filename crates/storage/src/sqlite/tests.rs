//! The catalog conformance suite over SQLite, file-backed and in memory, plus what only the
//! SQLite backend has to show: its migrations, its file settings and sharing the file between
//! processes.

use tempfile::TempDir;
use tokio::sync::OnceCell;

use super::*;
use crate::catalog_conformance::{CatalogFixture, catalog_conformance_tests};

/// A catalog file in a temporary directory removed when the fixture is dropped.
struct FileFixture {
    dir: TempDir,
}

impl FileFixture {
    fn new() -> Self {
        FileFixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("catalog.db")
    }
}

impl CatalogFixture for FileFixture {
    type Catalog = SqliteCatalog;

    async fn open(&self) -> SqliteCatalog {
        SqliteCatalog::open(&self.path()).await.unwrap()
    }

    async fn close(&self, catalog: SqliteCatalog) {
        catalog.close().await;
    }
}

/// One in-memory catalog; "reopening" hands out the same store again.
struct MemoryFixture {
    catalog: OnceCell<SqliteCatalog>,
}

impl MemoryFixture {
    fn new() -> Self {
        MemoryFixture {
            catalog: OnceCell::new(),
        }
    }
}

impl CatalogFixture for MemoryFixture {
    type Catalog = SqliteCatalog;

    async fn open(&self) -> SqliteCatalog {
        self.catalog
            .get_or_init(|| async { SqliteCatalog::open_in_memory().await.unwrap() })
            .await
            .clone()
    }
}

mod file {
    use super::*;
    catalog_conformance_tests!(FileFixture::new());
}

mod memory {
    use super::*;
    catalog_conformance_tests!(MemoryFixture::new());
}

#[test]
fn every_migration_file_is_embedded_in_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut on_disk: Vec<(i64, String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("sql"),
                "{stem}"
            );
            let (version, description) = stem.split_once('_').expect("NNNN_description.sql");
            let sql = std::fs::read_to_string(&path).unwrap();
            (version.parse().unwrap(), description.to_owned(), sql)
        })
        .collect();
    on_disk.sort();
    let embedded: Vec<(i64, String, String)> = MIGRATIONS
        .iter()
        .map(|&(version, description, sql)| (version, description.to_owned(), sql.to_owned()))
        .collect();
    assert_eq!(embedded, on_disk);
    let versions: Vec<i64> = embedded.iter().map(|m| m.0).collect();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_new_file_is_created_in_wal_mode_with_full_sync_and_foreign_keys() {
    let fixture = FileFixture::new();
    assert!(!fixture.path().exists());
    let catalog = fixture.open().await;
    assert!(fixture.path().exists());
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
    assert_eq!(journal_mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
    assert_eq!(foreign_keys, 1);
    let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
    assert_eq!(busy_timeout, BUSY_TIMEOUT.as_millis() as i64);
}

#[tokio::test]
async fn opening_twice_migrates_once() {
    let fixture = FileFixture::new();
    fixture.open().await.close().await;
    let catalog = fixture.open().await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn a_missing_directory_is_reported_with_the_path() {
    let fixture = FileFixture::new();
    let path = fixture.dir.path().join("absent/catalog.db");
    match SqliteCatalog::open(&path).await {
        Err(CatalogError::Backend(message)) => {
            assert!(message.contains("absent"), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_others_writes() {
    // The running server and the admin CLI each open the file: the generation tells the
    // server that the CLI changed something.
    let fixture = FileFixture::new();
    let server = fixture.open().await;
    let cli = fixture.open().await;
    let before = server.generation().await.unwrap();
    let provider = cli
        .create_provider("Acme", Timestamp::from_millis(1))
        .await
        .unwrap();
    assert!(server.generation().await.unwrap() > before);
    assert_eq!(
        server.get_provider(provider.id).await.unwrap(),
        Some(provider)
    );
}

#[tokio::test]
async fn concurrent_writers_all_commit() {
    let fixture = FileFixture::new();
    let first = fixture.open().await;
    let second = fixture.open().await;
    let provider = first
        .create_provider("Acme", Timestamp::from_millis(1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for index in 0..16 {
        let catalog = if index % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            catalog
                .create_folder(
                    provider.id,
                    &format!("f{index}"),
                    IdType::Cookie,
                    Timestamp::from_millis(2),
                )
                .await
                .unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.push(task.await.unwrap().num);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=16).collect::<Vec<u32>>());
    let generation = first.generation().await.unwrap();
    assert_eq!(generation, 17);
}

#[tokio::test]
async fn corrupt_rows_are_backend_errors() {
    let catalog = SqliteCatalog::open_in_memory().await.unwrap();
    let provider = catalog
        .create_provider("Acme", Timestamp::from_millis(1))
        .await
        .unwrap();
    // Corrupt the file behind the catalog's back (its members row still points at the old id).
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&catalog.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE providers SET id = 'not-a-uuid'")
        .execute(&catalog.pool)
        .await
        .unwrap();
    match catalog.list_providers().await {
        Err(CatalogError::Backend(message)) => assert!(message.contains("corrupt"), "{message}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(catalog.get_provider(provider.id).await.unwrap(), None);
}

#[tokio::test]
async fn constraint_violations_map_to_domain_errors() {
    let catalog = SqliteCatalog::open_in_memory().await.unwrap();
    let mut conn = catalog.pool.acquire().await.unwrap();
    let unknown = FolderId::random();
    let key = SegmentKey::parse("s").unwrap();
    let spec = SegmentSpec {
        name: "S".into(),
        description: String::new(),
        price: 0.0,
        ttl_minutes: 1,
        active: true,
        selectable: true,
        parent: None,
    };
    // Bypassing the checks of the trait methods: the database refuses, and says so in the
    // catalog's terms.
    match write_segment(
        &mut conn,
        INSERT_SEGMENT,
        unknown,
        &key,
        &spec,
        Timestamp::from_millis(1),
    )
    .await
    {
        Err(CatalogError::NotFound(what)) => assert_eq!(what, format!("folder {unknown}")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    drop(conn);
    let provider = catalog
        .create_provider("Acme", Timestamp::from_millis(1))
        .await
        .unwrap();
    let folder = catalog
        .create_folder(provider.id, "f", IdType::Cookie, Timestamp::from_millis(1))
        .await
        .unwrap();
    let mut conn = catalog.pool.acquire().await.unwrap();
    write_segment(
        &mut conn,
        INSERT_SEGMENT,
        folder.id,
        &key,
        &spec,
        Timestamp::from_millis(1),
    )
    .await
    .unwrap();
    match write_segment(
        &mut conn,
        INSERT_SEGMENT,
        folder.id,
        &key,
        &spec,
        Timestamp::from_millis(1),
    )
    .await
    {
        Err(CatalogError::AlreadyExists(what)) => assert_eq!(what, "segment s"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let too_long = SegmentSpec {
        ttl_minutes: u32::MAX,
        ..spec
    };
    let other_key = SegmentKey::parse("t").unwrap();
    match write_segment(
        &mut conn,
        INSERT_SEGMENT,
        folder.id,
        &other_key,
        &too_long,
        Timestamp::from_millis(1),
    )
    .await
    {
        Err(CatalogError::Backend(message)) => assert!(message.contains("CHECK"), "{message}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn handles_opening_a_new_file_together_all_succeed() {
    // Separate pools lock the file as separate processes would (the server and the admin CLI
    // started at once on a fresh deployment): each must wait for the others' setup, never fail
    // with "database is locked" or migrate twice.
    for _ in 0..20 {
        let fixture = FileFixture::new();
        let path = fixture.path();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SqliteCatalog::open(&path).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
    }
}
