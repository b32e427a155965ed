//! The OpenAPI 3 document of `/api/v1/`, generated from the handlers'
//! annotations and the JSON model in `fleet-edge-client`, served at
//! `GET /api/v1/openapi.json`.

use axum::body::Bytes;
use fleet_edge_client::model::{
    Degraded, ErrorBody, ErrorDetail, HomeItem, HomePage, HomeRow, Progress, ProgressRequest,
    ProgressResponse, RateRequest, RateResponse, Rating, RatingPage, RatingSummary, Title,
    TitlePage, TitleResponse, TitleV2,
};
use utoipa::OpenApi;

use crate::{home, titles, users};

/// The document's source.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fleet edge API",
        version = "1.0.0",
        description = "The public JSON API of the fleet reference system. Every error is \
            `{\"error\":{\"code\",\"message\",\"request_id\"}}`; 429 and 503 carry Retry-After. \
            A request over the edge's limits is refused before any backend is called: a URL over \
            8192 bytes with 414 `uri_too_long`, more than 64 headers or 16 KiB of them with \
            431 `header_fields_too_large`, a body over 4096 bytes with 413 \
            `payload_too_large`, JSON nested deeper than 32 with 400 (defaults). \
            Every response carries `x-request-id`; send `traceparent` to join a trace. \
            `x-version-<service>: <major.minor>` pins a downstream version."
    ),
    paths(
        titles::get_title,
        titles::get_title_v2,
        titles::list_titles,
        home::home,
        users::rate_title,
        users::list_ratings,
        users::record_progress,
    ),
    components(schemas(
        Title, TitleV2, RatingSummary, Degraded, TitleResponse, TitlePage, HomePage, HomeRow, HomeItem,
        RateRequest, Rating, RateResponse, RatingPage, ProgressRequest, Progress,
        ProgressResponse, ErrorBody, ErrorDetail,
    )),
    tags(
        (name = "titles", description = "The catalogue"),
        (name = "users", description = "A user's home page, ratings and viewing progress"),
    )
)]
pub struct ApiDoc;

/// The document as served (rendered once).
pub fn document() -> Bytes {
    // Serializing a derived document cannot fail; an empty body would be
    // caught by the tests that parse it.
    Bytes::from(ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_slice(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/v1/titles/{id}", "get"),
            ("/api/v2/titles/{id}", "get"),
            ("/api/v1/titles", "get"),
            ("/api/v1/users/{user}/home", "get"),
            ("/api/v1/users/{user}/ratings/{title}", "put"),
            ("/api/v1/users/{user}/ratings", "get"),
            ("/api/v1/users/{user}/progress/{title}", "put"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path} missing");
        }
        let stars = &doc["components"]["schemas"]["RateRequest"]["properties"]["stars"];
        assert_eq!(stars["minimum"], 1);
        assert_eq!(stars["maximum"], 5);
    }
}
