//! The API handlers: `POST /api/v1/embeddings` and `GET /api/v1/models`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::inspect_image;
use sonosam_model::weights::sha256_hex;
use sonosam_model::wire::{ModelInfo, ModelsAnswer};
use sonosam_model::{SamError, wire};

use super::cache::EmbeddingCache;
use super::encoder::Encoder;
use super::metrics::Metrics;
use super::policy::error;

/// What the handlers share.
pub struct Api {
    pub cache: Arc<EmbeddingCache>,
    pub encoder: Encoder,
    pub metrics: Arc<Metrics>,
    pub backend: BackendKind,
    pub max_body: usize,
    pub max_pixels: u64,
    pub body_timeout: Duration,
}

/// `POST /api/v1/embeddings[?dtype=f16|f32]`: the image's embedding in the wire format.
pub async fn embeddings(State(api): State<Arc<Api>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Body) -> Response {
    embed(&api, query.as_deref(), &headers, body).await.unwrap_or_else(|e| e)
}

async fn embed(api: &Api, query: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Response, Response> {
    let dtype = dtype(query)?;
    let image = read_body(api, headers, body).await?;
    let info = inspect_image(&image).map_err(|e| {
        let status = match e {
            SamError::ImageTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        error(status, e.to_string())
    })?;
    let pixels = u64::from(info.width) * u64::from(info.height);
    if pixels > api.max_pixels {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the image is {}×{}: more than the {} pixels this server accepts (--max-pixels)", info.width, info.height, api.max_pixels),
        ));
    }
    let image_sha256 = sha256_hex(&image);
    let (data, geometry) = match api.cache.get(&image_sha256) {
        Some(v) => {
            api.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            v
        }
        None => {
            api.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            api.encoder.embedding(&image_sha256, image, info).await.map_err(|(status, msg)| {
                let mut r = error(status, msg);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                r
            })?
        }
    };
    let header = api.cache.identity().header(&image_sha256, dtype, geometry);
    let bytes = wire::encode(&header, &data).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, wire::CONTENT_TYPE)], bytes).into_response())
}

/// The `dtype` of the query (default f16); anything else in it is an error.
fn dtype(query: Option<&str>) -> Result<&'static str, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let mut dtype = None;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("dtype", _) if dtype.is_some() => return Err(bad("dtype is given more than once".into())),
            ("dtype", "f16") => dtype = Some("f16"),
            ("dtype", "f32") => dtype = Some("f32"),
            ("dtype", other) => return Err(bad(format!("dtype must be f16 or f32, not `{other}`"))),
            (name, _) => return Err(bad(format!("unknown query parameter `{name}` (this endpoint takes dtype=f16|f32)"))),
        }
    }
    Ok(dtype.unwrap_or("f16"))
}

/// The request body, within the size limit (413) and the time limit (408).
async fn read_body(api: &Api, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, format!("the image is larger than the {} bytes this server accepts (--max-body)", api.max_body));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > api.max_body as u64) {
        return Err(too_large());
    }
    let bytes = match tokio::time::timeout(api.body_timeout, axum::body::to_bytes(body, api.max_body)).await {
        Err(_) => {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the image did not arrive within {} s (--body-timeout)", api.body_timeout.as_secs_f64()),
            ));
        }
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => return Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Ok(Ok(bytes)) => bytes,
    };
    if bytes.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "empty body: send the image file's bytes"));
    }
    Ok(bytes)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit exceeded") {
            return true;
        }
        source = s.source();
    }
    false
}

/// `GET /api/v1/models`.
pub async fn models(State(api): State<Arc<Api>>) -> Response {
    let id = api.cache.identity();
    let model = ModelInfo {
        id: id.model_id.clone(),
        encoder_sha256: id.encoder_sha256.clone(),
        frame: id.frame,
        embedding_shape: id.shape.clone(),
        backend: api.backend.to_string(),
        dtypes: vec!["f16".into(), "f32".into()],
    };
    axum::Json(ModelsAnswer { models: vec![model] }).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(dtype(None).unwrap(), "f16");
        assert_eq!(dtype(Some("dtype=f32")).unwrap(), "f32");
        assert!(dtype(Some("dtype=f16&dtype=f32")).is_err());
        assert!(dtype(Some("dtype=f64")).is_err());
        assert!(dtype(Some("x=1")).is_err());
    }
}
