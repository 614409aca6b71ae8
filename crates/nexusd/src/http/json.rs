//! `ApiJson`: a JSON body extractor whose rejections use the standard error body.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use nexus_api::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Like `axum::Json`, but a bad body is a 400 `invalid_json` naming the problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body has the wrong shape: {}", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "request body must be JSON: send the header `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status().as_u16() == 413 => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is too large: {}", e.body_text()),
        ),
        other => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("cannot read the request body: {}", other.body_text()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Named {
        #[allow(dead_code)]
        name: String,
    }

    async fn send(body: &str, content_type: Option<&str>) -> (u16, serde_json::Value) {
        let app = Router::new().route("/", post(|ApiJson(_): ApiJson<Named>| async { "ok" }));
        let mut req = axum::http::Request::post("/");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = app
            .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
            .await
            .expect("infallible");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn malformed_json_is_a_400_naming_the_problem() {
        let (status, body) = send("{\"name\": ", Some("application/json")).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_json");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("not valid JSON")
        );
    }

    #[tokio::test]
    async fn a_missing_field_is_named() {
        let (status, body) = send("{}", Some("application/json")).await;
        assert_eq!(status, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("name"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_wrong_content_type_is_a_415() {
        let (status, body) = send("{\"name\":\"x\"}", None).await;
        assert_eq!(status, 415);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }

    #[tokio::test]
    async fn a_good_body_passes() {
        let (status, _) = send("{\"name\":\"x\"}", Some("application/json")).await;
        assert_eq!(status, 200);
    }
}
