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
use super::encoder::{Encoder, Outcome, Upload};
use super::shared::{Lock, SharedTier};
use sonosam_dicom::{Dicom, DicomError};
use super::metrics::Metrics;
use super::policy::error;

/// What the handlers share.
pub struct Api {
    pub cache: Arc<EmbeddingCache>,
    /// The replicas' Redis (`--cache-url`).
    pub shared: Option<SharedTier>,
    pub encoder: Encoder,
    pub metrics: Arc<Metrics>,
    pub backend: BackendKind,
    pub max_body: usize,
    pub max_pixels: u64,
    pub body_timeout: Duration,
}

/// After a miss in memory and on disk: the shared tier's copy, another replica's encoding
/// (waited for while it holds the image's lock), or this replica's own, which is then shared.
async fn shared_or_encoded(api: &Api, image_sha256: &str, upload: Upload, info: (u32, u32)) -> Outcome {
    let Some(shared) = &api.shared else {
        return api.encoder.embedding(image_sha256, upload, info).await;
    };
    let identity = api.cache.identity();
    let (found, mine) = match shared.get(identity, image_sha256).await {
        Some(entry) => (Some(entry), false),
        None => match shared.lock(identity, image_sha256).await {
            Lock::Theirs => (shared.wait(identity, image_sha256, api.encoder.timeout()).await, false),
            // The leader before us may have stored it between our look and our lock.
            Lock::Mine => (shared.peek(identity, image_sha256).await, true),
        },
    };
    let outcome = match found {
        Some(entry) => {
            api.cache.put(image_sha256, entry.clone());
            Ok(entry)
        }
        None => {
            let outcome = api.encoder.embedding(image_sha256, upload, info).await;
            if let Ok(entry) = &outcome {
                shared.put(identity, image_sha256, entry).await;
            }
            outcome
        }
    };
    if mine {
        shared.unlock(identity, image_sha256).await;
    }
    outcome
}

/// `POST /api/v1/embeddings[?dtype=f16|f32][&frame=N]`: the embedding of the image (PNG, JPEG,
/// BMP, or frame N of a DICOM file) in the wire format.
pub async fn embeddings(State(api): State<Arc<Api>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Body) -> Response {
    embed(&api, query.as_deref(), &headers, body).await.unwrap_or_else(|e| e)
}

async fn embed(api: &Api, query: Option<&str>, headers: &HeaderMap, body: Body) -> Result<Response, Response> {
    let query = parse_query(query)?;
    let body = read_body(api, headers, body).await?;
    let (image_sha256, upload, (width, height)) = if sonosam_dicom::is_dicom(&body) || query.frame.is_some() {
        dicom_upload(body, query.frame.unwrap_or(0)).await?
    } else {
        let info = inspect_image(&body).map_err(|e| {
            let status = match e {
                SamError::ImageTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        })?;
        (sha256_hex(&body), Upload::File(body), (info.width, info.height))
    };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > api.max_pixels {
        return Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the image is {width}×{height}: more than the {} pixels this server accepts (--max-pixels)", api.max_pixels),
        ));
    }
    let (data, geometry) = match api.cache.get(&image_sha256) {
        Some(v) => {
            api.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            v
        }
        None => {
            api.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
            shared_or_encoded(api, &image_sha256, upload, (width, height)).await.map_err(|(status, msg)| {
                let mut r = error(status, msg);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                r
            })?
        }
    };
    let header = api.cache.identity().header(&image_sha256, query.dtype, geometry);
    let bytes = wire::encode(&header, &data).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, wire::CONTENT_TYPE)], bytes).into_response())
}

/// A DICOM body: read and checked off the async threads (sizes and frame count before any
/// pixel is decoded), frame `frame` asked for. Its cache key is the file's SHA-256 with the
/// frame, so every frame of a cine is its own image.
async fn dicom_upload(body: Bytes, frame: u32) -> Result<(String, Upload, (u32, u32)), Response> {
    let key = sha256_hex(format!("{}#frame={frame}", sha256_hex(&body)).as_bytes());
    let dicom = tokio::task::spawn_blocking(move || Dicom::read(&body))
        .await
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "reading the DICOM file failed"))?
        .map_err(|e| {
            let status = match e {
                DicomError::UnsupportedSyntax { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                DicomError::TooLarge(_) | DicomError::NoPixels => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        })?;
    let info = &dicom.info;
    if frame >= info.frames {
        return Err(error(StatusCode::BAD_REQUEST, DicomError::NoSuchFrame { frame, frames: info.frames }.to_string()));
    }
    let size = (info.columns, info.rows);
    Ok((key, Upload::Dicom(Arc::new(dicom), frame), size))
}

/// The query: `dtype` (f16, the default, or f32) and, for DICOM bodies, `frame` (from 0);
/// anything else is an error.
struct Query {
    dtype: &'static str,
    frame: Option<u32>,
}

fn parse_query(query: Option<&str>) -> Result<Query, Response> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let (mut dtype, mut frame) = (None, None);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("dtype", _) if dtype.is_some() => return Err(bad("dtype is given more than once".into())),
            ("dtype", "f16") => dtype = Some("f16"),
            ("dtype", "f32") => dtype = Some("f32"),
            ("dtype", other) => return Err(bad(format!("dtype must be f16 or f32, not `{other}`"))),
            ("frame", _) if frame.is_some() => return Err(bad("frame is given more than once".into())),
            ("frame", n) => frame = Some(n.parse().map_err(|_| bad(format!("frame must be a frame number from 0, not `{n}`")))?),
            (name, _) => {
                return Err(bad(format!("unknown query parameter `{name}` (this endpoint takes dtype=f16|f32 and, for DICOM, frame=N)")));
            }
        }
    }
    Ok(Query { dtype: dtype.unwrap_or("f16"), frame })
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
        let q = |s: Option<&str>| parse_query(s).map(|q| (q.dtype, q.frame));
        assert_eq!(q(None).ok(), Some(("f16", None)));
        assert_eq!(q(Some("dtype=f32")).ok(), Some(("f32", None)));
        assert_eq!(q(Some("frame=10&dtype=f32")).ok(), Some(("f32", Some(10))));
        for bad in ["dtype=f16&dtype=f32", "dtype=f64", "x=1", "frame=-1", "frame=a", "frame=1&frame=2"] {
            assert!(q(Some(bad)).is_err(), "{bad}");
        }
    }
}
