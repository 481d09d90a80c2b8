//! The operator-only HTTP admin API under `/admin`, guarded by the operator token.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use segmart_domain::{ClientId, ErrorCode, IdType, PermissionSet, ProviderId};
use segmart_storage::catalog::{Folder, OAuthClient, Provider};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::body::{JsonBody, QueryParams};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ops;
use crate::secrets;
use crate::state::SharedState;

/// Extractor: the caller presented the operator token.
pub struct Operator;

impl FromRequestParts<SharedState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::OperatorOnly,
                    "the admin API needs the operator token: Authorization: Bearer <operator token>",
                )
            })?;
        let hash = secrets::sha256_hex(presented);
        if !secrets::constant_time_eq(hash.as_bytes(), state.operator_token_sha256.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::OperatorOnly,
                "the operator token is not valid",
            ));
        }
        Ok(Operator)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    pub name: String,
    /// The DMP ID the provider's batch files are named with: 1..=64 of `[A-Za-z0-9_-]`, unique.
    #[serde(default, rename = "dmpId")]
    pub dmp_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderDto {
    pub id: String,
    pub name: String,
    /// The DMP ID of the provider's batch file names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dmp_id: Option<String>,
    /// Default pricing: `RATE` (percent of media cost) or `FIX` (CPM); a segment's own cost
    /// applies only when it is 0 or no default is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cost_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_cost_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_currency: Option<String>,
    pub created_at: i64,
}

impl From<Provider> for ProviderDto {
    fn from(p: Provider) -> Self {
        ProviderDto {
            id: p.id.to_string(),
            name: p.name,
            dmp_id: p.dmp_id,
            default_cost_type: p.default_pricing.map(|c| c.cost_type.name().to_owned()),
            default_cost_value: p.default_pricing.map(|c| c.value),
            default_currency: p
                .default_pricing
                .and_then(|c| c.currency)
                .map(|c| c.code().to_owned()),
            created_at: p.created_at.millis(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewFolder {
    pub name: String,
    /// cookie, maid, ppid, extended_id or ip.
    pub id_type: String,
    /// The extended-id vendor (only with id_type extended_id).
    pub vendor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FolderDto {
    /// The `segmentProviderId`.
    pub id: String,
    pub provider_id: String,
    pub name: String,
    pub id_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    pub created_at: i64,
}

impl From<Folder> for FolderDto {
    fn from(f: Folder) -> Self {
        FolderDto {
            id: f.id.to_string(),
            provider_id: f.provider.to_string(),
            name: f.name,
            id_type: f.id_type.name().to_owned(),
            vendor: f.id_type.vendor().map(str::to_owned),
            created_at: f.created_at.millis(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    pub name: String,
    /// Permissions the client may request; default all four.
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientDto {
    pub client_id: String,
    pub provider_id: String,
    pub name: String,
    pub permissions: Vec<String>,
    pub revoked: bool,
    pub created_at: i64,
    /// Present only in the answer that created or rotated the secret; stored hashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl ClientDto {
    pub fn new(c: OAuthClient, secret: Option<String>) -> Self {
        ClientDto {
            client_id: c.id.to_string(),
            provider_id: c.provider.to_string(),
            name: c.name,
            permissions: c
                .permissions
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            revoked: c.revoked,
            created_at: c.created_at.millis(),
            client_secret: secret,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProviderFilter {
    /// Only this provider's entries.
    pub provider: Option<String>,
}

fn parse_provider(raw: &str, field: &str) -> ApiResult<ProviderId> {
    raw.parse()
        .map_err(|_| ApiError::field(field, format!("{raw:?} is not a provider id (UUID)")))
}

fn parse_filter(filter: &ProviderFilter) -> ApiResult<Option<ProviderId>> {
    filter
        .provider
        .as_deref()
        .map(|p| parse_provider(p, "provider"))
        .transpose()
}

/// Create a provider.
#[utoipa::path(post, path = "/admin/providers", tag = "admin", request_body = NewProvider,
    responses((status = 201, body = ProviderDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn create_provider(
    State(state): State<SharedState>,
    _op: Operator,
    JsonBody(body): JsonBody<NewProvider>,
) -> ApiResult<(StatusCode, Json<ProviderDto>)> {
    if let Some(dmp_id) = &body.dmp_id {
        ops::check_dmp_id_free(state.catalog.as_ref(), dmp_id).await?;
    }
    let mut provider =
        ops::create_provider(state.catalog.as_ref(), state.clock.as_ref(), &body.name).await?;
    if let Some(dmp_id) = &body.dmp_id {
        provider = state
            .catalog
            .set_provider_dmp_id(provider.id, Some(dmp_id))
            .await?;
    }
    Ok((StatusCode::CREATED, Json(provider.into())))
}

/// List providers.
#[utoipa::path(get, path = "/admin/providers", tag = "admin",
    responses((status = 200, body = Vec<ProviderDto>), (status = 401, body = ErrorBody)), security(("operator" = [])))]
pub async fn list_providers(
    State(state): State<SharedState>,
    _op: Operator,
) -> ApiResult<Json<Vec<ProviderDto>>> {
    let providers = state.catalog.list_providers().await?;
    Ok(Json(providers.into_iter().map(ProviderDto::from).collect()))
}

/// Create a segment provider folder for a provider.
#[utoipa::path(post, path = "/admin/providers/{provider}/folders", tag = "admin", request_body = NewFolder,
    params(("provider" = String, Path, description = "provider id")),
    responses((status = 201, body = FolderDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn create_folder(
    State(state): State<SharedState>,
    _op: Operator,
    Path(provider): Path<String>,
    JsonBody(body): JsonBody<NewFolder>,
) -> ApiResult<(StatusCode, Json<FolderDto>)> {
    let provider = parse_provider(&provider, "provider")?;
    let id_type = IdType::from_parts(&body.id_type, body.vendor.as_deref())
        .map_err(|why| ApiError::field("idType", why))?;
    let folder = ops::create_folder(
        state.catalog.as_ref(),
        state.clock.as_ref(),
        provider,
        &body.name,
        id_type,
    )
    .await?;
    state.directory.put_folder(folder.clone());
    Ok((StatusCode::CREATED, Json(folder.into())))
}

/// List folders.
#[utoipa::path(get, path = "/admin/folders", tag = "admin", params(ProviderFilter),
    responses((status = 200, body = Vec<FolderDto>), (status = 401, body = ErrorBody)), security(("operator" = [])))]
pub async fn list_folders(
    State(state): State<SharedState>,
    _op: Operator,
    QueryParams(filter): QueryParams<ProviderFilter>,
) -> ApiResult<Json<Vec<FolderDto>>> {
    let folders = state.catalog.list_folders(parse_filter(&filter)?).await?;
    Ok(Json(folders.into_iter().map(FolderDto::from).collect()))
}

/// Create an OAuth client for a provider; the secret is in this answer only.
#[utoipa::path(post, path = "/admin/providers/{provider}/clients", tag = "admin", request_body = NewClient,
    params(("provider" = String, Path, description = "provider id")),
    responses((status = 201, body = ClientDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)), security(("operator" = [])))]
pub async fn create_client(
    State(state): State<SharedState>,
    _op: Operator,
    Path(provider): Path<String>,
    JsonBody(body): JsonBody<NewClient>,
) -> ApiResult<(StatusCode, Json<ClientDto>)> {
    let provider = parse_provider(&provider, "provider")?;
    let permissions = match body.permissions {
        None => PermissionSet::ALL,
        Some(list) => PermissionSet::parse_list(&list.join(","))
            .map_err(|why| ApiError::field("permissions", why))?,
    };
    let issued = ops::create_client(
        state.catalog.as_ref(),
        state.clock.as_ref(),
        provider,
        &body.name,
        permissions,
    )
    .await?;
    state.directory.put_client(issued.client.clone());
    Ok((
        StatusCode::CREATED,
        Json(ClientDto::new(issued.client, Some(issued.secret))),
    ))
}

/// List OAuth clients (never their secrets).
#[utoipa::path(get, path = "/admin/clients", tag = "admin", params(ProviderFilter),
    responses((status = 200, body = Vec<ClientDto>), (status = 401, body = ErrorBody)), security(("operator" = [])))]
pub async fn list_clients(
    State(state): State<SharedState>,
    _op: Operator,
    QueryParams(filter): QueryParams<ProviderFilter>,
) -> ApiResult<Json<Vec<ClientDto>>> {
    let clients = state.catalog.list_clients(parse_filter(&filter)?).await?;
    Ok(Json(
        clients
            .into_iter()
            .map(|c| ClientDto::new(c, None))
            .collect(),
    ))
}

fn parse_client(raw: &str) -> ApiResult<ClientId> {
    raw.parse()
        .map_err(|_| ApiError::field("client", format!("{raw:?} is not a client id (UUID)")))
}

/// Give a client a new secret; its existing tokens stop working.
#[utoipa::path(post, path = "/admin/clients/{client}/rotate", tag = "admin",
    params(("client" = String, Path, description = "client id")),
    responses((status = 200, body = ClientDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn rotate_client(
    State(state): State<SharedState>,
    _op: Operator,
    Path(client): Path<String>,
) -> ApiResult<Json<ClientDto>> {
    let issued = ops::rotate_client(state.catalog.as_ref(), parse_client(&client)?).await?;
    state.directory.put_client(issued.client.clone());
    Ok(Json(ClientDto::new(issued.client, Some(issued.secret))))
}

/// Revoke a client; its tokens stop working at once.
#[utoipa::path(post, path = "/admin/clients/{client}/revoke", tag = "admin",
    params(("client" = String, Path, description = "client id")),
    responses((status = 200, body = ClientDto), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("operator" = [])))]
pub async fn revoke_client(
    State(state): State<SharedState>,
    _op: Operator,
    Path(client): Path<String>,
) -> ApiResult<Json<ClientDto>> {
    let client = ops::revoke_client(state.catalog.as_ref(), parse_client(&client)?).await?;
    state.directory.put_client(client.clone());
    Ok(Json(ClientDto::new(client, None)))
}
