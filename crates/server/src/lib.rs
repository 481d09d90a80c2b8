//! The segmart HTTP server.
//!
//! Entry points: [`router`] builds the axum application from an [`AppState`]; [`serve`] runs it
//! on a bound listener until a shutdown future resolves, then flushes the profile store.
//! Tests start the real server on port 0 through the same function.
//!
//! Architecture invariant: only this crate knows HTTP and JSON. Handlers are thin: extractors
//! authenticate and check permissions (by type), handlers call the catalog, the directory and the
//! profile store, and every error becomes an answer in `error.rs`.

pub mod access;
pub mod admin;
pub mod batch_json;
pub mod billing;
pub mod body;
pub mod directory;
pub mod error;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod oauth;
pub mod ops;
pub mod profiles;
pub mod ratelimit;
pub mod secrets;
pub mod segment_map;
pub mod segments;
pub mod state;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use segmart_domain::ErrorCode;
use tokio::net::TcpListener;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub use state::{AppState, Settings, SharedState};

use crate::error::ApiError;

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "segmart", description = "Audience data marketplace: segment and profile sync API, operator admin API."),
    paths(
        oauth::token,
        segments::create_segment, segments::put_segment, segments::get_segment, segments::list_segments,
        profiles::post_batch, profiles::get_profile, profiles::put_profile, profiles::delete_profile,
        admin::create_provider, admin::list_providers, admin::create_folder, admin::list_folders,
        admin::create_client, admin::list_clients, admin::rotate_client, admin::revoke_client,
        ingest::api::upload_file, ingest::api::file_status, ingest::api::list_files, ingest::api::rejected_lines,
        ingest::api::operator_upload, ingest::api::operator_delivery, ingest::api::operator_progress,
        billing::session::auth, billing::xandr::data_provider, billing::xandr::list_mappings,
        billing::xandr::create_mapping, billing::xandr::update_mapping, billing::xandr::delete_mapping,
        billing::metering::report_usage, billing::usage::usage_report, billing::usage::impression,
        billing::sharing::create_share, billing::sharing::list_shares, billing::sharing::revoke_share,
        billing::sharing::activate_key, billing::sharing::external_segments,
        billing::sharing::create_campaign, billing::sharing::list_campaigns, billing::sharing::get_campaign,
        billing::sharing::campaign_action, billing::sharing::outbox,
        billing::admin::create_publisher, billing::admin::create_category, billing::admin::set_rate,
        billing::admin::set_revshare, billing::admin::create_buyer, billing::admin::list_buyers,
        billing::admin::create_user, billing::admin::create_buyer_client, billing::admin::create_bidder,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "OAuth2 client credentials"),
        (name = "segments", description = "Segment API (1000 requests per folder per day)"),
        (name = "profiles", description = "Profile API (1000 requests per folder per second; a batch counts as one)"),
        (name = "files", description = "Batch files: upload, reports, rejected lines (profile API rate limit)"),
        (name = "admin", description = "Operator administration"),
        (name = "billing", description = "Sign-in, pricing taxonomy, billing mappings, metering and usage reports"),
        (name = "sharing", description = "Access keys, activation, external segments, campaigns, revocation"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Builds the whole application.
pub fn router(state: SharedState) -> Router {
    let folder_routes = Router::new()
        .route(
            "/segmentproviders/{spid}/segments",
            post(segments::create_segment).get(segments::list_segments),
        )
        .route(
            "/segmentproviders/{spid}/segments/{id}",
            get(segments::get_segment).put(segments::put_segment),
        )
        .route(
            "/segmentproviders/{spid}/profiles",
            post(profiles::post_batch),
        )
        .route(
            "/segmentproviders/{spid}/profiles/{profileId}",
            get(profiles::get_profile)
                .put(profiles::put_profile)
                .delete(profiles::delete_profile),
        )
        .route(
            "/segmentproviders/{spid}/files",
            get(ingest::api::list_files),
        )
        .route(
            "/segmentproviders/{spid}/files/{file}",
            get(ingest::api::file_status).put(ingest::api::upload_file),
        )
        .route(
            "/segmentproviders/{spid}/files/{file}/rejects",
            get(ingest::api::rejected_lines),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::folder_guard,
        ));

    let admin_routes = Router::new()
        .route(
            "/admin/providers",
            post(admin::create_provider).get(admin::list_providers),
        )
        .route(
            "/admin/providers/{provider}/folders",
            post(admin::create_folder),
        )
        .route("/admin/folders", get(admin::list_folders))
        .route(
            "/admin/providers/{provider}/clients",
            post(admin::create_client),
        )
        .route("/admin/clients", get(admin::list_clients))
        .route("/admin/clients/{client}/rotate", post(admin::rotate_client))
        .route("/admin/clients/{client}/revoke", post(admin::revoke_client))
        .route(
            "/admin/ingest/files/{filename}",
            axum::routing::put(ingest::api::operator_upload),
        )
        .route(
            "/admin/ingest/deliveries/{id}",
            get(ingest::api::operator_delivery),
        )
        .route(
            "/admin/ingest/progress",
            get(ingest::api::operator_progress),
        );

    let billing_routes = Router::new()
        .route("/auth", post(billing::session::auth))
        .route("/data-provider", get(billing::xandr::data_provider))
        .route(
            "/segment-billing-category",
            get(billing::xandr::list_mappings)
                .post(billing::xandr::create_mapping)
                .put(billing::xandr::update_mapping)
                .delete(billing::xandr::delete_mapping),
        )
        .route("/bidder/usage", post(billing::metering::report_usage))
        .route("/usage", get(billing::usage::usage_report))
        .route(
            "/usage/impressions/{impression}",
            get(billing::usage::impression),
        )
        .route(
            "/shares",
            post(billing::sharing::create_share).get(billing::sharing::list_shares),
        )
        .route(
            "/shares/{id}",
            axum::routing::delete(billing::sharing::revoke_share),
        )
        .route("/buyer/activations", post(billing::sharing::activate_key))
        .route(
            "/activate",
            get(billing::sharing::activation_page).post(billing::sharing::confirm_activation),
        )
        .route("/buyer/segments", get(billing::sharing::external_segments))
        .route(
            "/buyer/campaigns",
            post(billing::sharing::create_campaign).get(billing::sharing::list_campaigns),
        )
        .route("/buyer/campaigns/{id}", get(billing::sharing::get_campaign))
        .route(
            "/buyer/campaigns/{id}/{action}",
            post(billing::sharing::campaign_action),
        )
        .route("/admin/outbox", get(billing::sharing::outbox))
        .route(
            "/admin/billing/publishers",
            post(billing::admin::create_publisher),
        )
        .route(
            "/admin/billing/categories",
            post(billing::admin::create_category),
        )
        .route("/admin/billing/rates", post(billing::admin::set_rate))
        .route(
            "/admin/billing/revshare",
            post(billing::admin::set_revshare),
        )
        .route(
            "/admin/buyers",
            post(billing::admin::create_buyer).get(billing::admin::list_buyers),
        )
        .route("/admin/users", post(billing::admin::create_user))
        .route(
            "/admin/buyer-clients",
            post(billing::admin::create_buyer_client),
        )
        .route("/admin/bidders", post(billing::admin::create_bidder));

    Router::new()
        .route("/oauth2/token", post(oauth::token))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_page))
        .merge(folder_routes)
        .merge(admin_routes)
        .merge(billing_routes)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_answer,
        ))
        .with_state(state)
}

async fn healthz(State(state): State<SharedState>) -> Response {
    let mut response = axum::Json(serde_json::json!({
        "status": "ok",
        "region": state.settings.region,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn metrics_page(State(state): State<SharedState>) -> Response {
    let stats = state.profiles.stats();
    let ledger = state.ledger.stats();
    let text = state.metrics.render(&[
        (
            "segmart_ledger_records",
            "Metered impressions held by the ledger",
            ledger.records as f64,
        ),
        (
            "segmart_ledger_log_bytes",
            "Bytes of the ledger's log",
            ledger.log_bytes as f64,
        ),
        (
            "segmart_profiles",
            "Profiles held by the profile store",
            stats.profiles as f64,
        ),
        (
            "segmart_profile_memberships",
            "Profile-segment links held",
            stats.memberships as f64,
        ),
        (
            "segmart_profile_store_memory_bytes",
            "Memory held by the profile tables",
            stats.memory_bytes as f64,
        ),
        (
            "segmart_profile_wal_bytes",
            "Bytes in the profile write-ahead log",
            stats.wal_bytes as f64,
        ),
        (
            "segmart_profile_batches_written",
            "Durable profile write batches",
            stats.batches_written as f64,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no such resource: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

fn panic_answer(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

async fn record_metrics(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state.metrics.record_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Keeps the directory in step with catalog changes made outside this process.
pub fn spawn_catalog_watcher(state: SharedState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.settings.catalog_poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(err) = state
                .directory
                .refresh_if_changed(state.catalog.as_ref())
                .await
            {
                tracing::warn!(error = %err, "catalog refresh failed");
            }
            if let Err(err) = state
                .billing
                .refresh_if_changed(state.catalog.as_ref())
                .await
            {
                tracing::warn!(error = %err, "billing rules refresh failed");
            }
        }
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish, and makes every acknowledged profile write durable.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let watcher = spawn_catalog_watcher(state.clone());
    let mailer = mail::spawn_mailer(state.clone(), state.settings.mail_interval);
    let ingest_worker = ingest::spawn(state.clone());
    let app = router(state.clone());
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    watcher.abort();
    mailer.abort();
    state.ingest.request_stop();
    let _ = ingest_worker.await;
    let flushed = state.profiles.shutdown().await;
    if let Err(err) = state.ledger.shutdown().await {
        tracing::error!(error = %err, "ledger shutdown failed");
        result?;
        return Err(std::io::Error::other(err));
    }
    result?;
    flushed.map_err(|err| {
        tracing::error!(error = %err, "profile store shutdown failed");
        std::io::Error::other(err)
    })
}

/// Answers `StatusCode` for documentation of the shared error shape.
pub fn status_of(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Shorthand for building shared state.
pub fn share(state: AppState) -> SharedState {
    Arc::new(state)
}
