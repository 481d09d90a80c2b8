//! Every SQL statement of the SQLite catalog, one `.sql` file each, embedded at compile time.
//!
//! Statements bind numbered parameters (`?1`, `?2`…); the order is documented by each file.

macro_rules! sql {
    ($path:literal) => {
        include_str!(concat!("queries/", $path, ".sql"))
    };
}

pub(super) const BUMP_GENERATION: &str = sql!("generation/bump");
pub(super) const GET_GENERATION: &str = sql!("generation/get");

pub(super) const INSERT_PROVIDER: &str = sql!("providers/insert");
pub(super) const GET_PROVIDER: &str = sql!("providers/get");
pub(super) const LIST_PROVIDERS: &str = sql!("providers/list");

pub(super) const INSERT_FOLDER: &str = sql!("folders/insert");
pub(super) const GET_FOLDER: &str = sql!("folders/get");
pub(super) const LIST_FOLDERS: &str = sql!("folders/list");

pub(super) const INSERT_CLIENT: &str = sql!("clients/insert");
pub(super) const GET_CLIENT: &str = sql!("clients/get");
pub(super) const LIST_CLIENTS: &str = sql!("clients/list");
pub(super) const ROTATE_CLIENT: &str = sql!("clients/rotate");
pub(super) const REVOKE_CLIENT: &str = sql!("clients/revoke");

pub(super) const INSERT_SEGMENT: &str = sql!("segments/insert");
pub(super) const UPDATE_SEGMENT: &str = sql!("segments/update");
pub(super) const GET_SEGMENT: &str = sql!("segments/get");
pub(super) const LIST_SEGMENTS_PAGE: &str = sql!("segments/list_page");
pub(super) const COUNT_SEGMENTS: &str = sql!("segments/count");
pub(super) const ALL_SEGMENTS: &str = sql!("segments/all");
pub(super) const LINEAGE_CONTAINS: &str = sql!("segments/lineage_contains");

pub(super) const GET_SETTING: &str = sql!("settings/get");
pub(super) const SET_SETTING: &str = sql!("settings/set");

pub(super) const SET_PROVIDER_DMP_ID: &str = sql!("providers/set_dmp_id");
pub(super) const PROVIDER_BY_DMP_ID: &str = sql!("providers/by_dmp_id");
pub(super) const SET_PROVIDER_DEFAULT_PRICING: &str = sql!("providers/set_default_pricing");
pub(super) const UPSERT_TAXONOMY_SEGMENT: &str = sql!("segments/upsert_taxonomy");

pub(super) const INSERT_INGEST_FILE: &str = sql!("ingest/insert");
pub(super) const EFFECTIVE_INGEST_FILE: &str = sql!("ingest/effective");
pub(super) const NEWEST_APPLIED_DATE: &str = sql!("ingest/newest_applied_date");
pub(super) const START_INGEST_FILE: &str = sql!("ingest/start");
pub(super) const FINISH_INGEST_FILE: &str = sql!("ingest/finish");
pub(super) const GET_INGEST_FILE: &str = sql!("ingest/get");
pub(super) const INGEST_DELIVERIES: &str = sql!("ingest/deliveries");
pub(super) const LIST_INGEST_FILES_PAGE: &str = sql!("ingest/list_page");
pub(super) const NEXT_INGEST_FILE: &str = sql!("ingest/next");
pub(super) const PENDING_INGEST_FILES: &str = sql!("ingest/pending");
