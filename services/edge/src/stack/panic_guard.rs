//! Layer: a panicking handler answers 500 in the JSON error shape instead
//! of dropping the connection (the cause is logged, never sent).

use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};

use crate::error::ApiError;

/// Renders a caught panic.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonPanic;

impl ResponseForPanic for JsonPanic {
    type ResponseBody = axum::body::Body;

    fn response_for_panic(
        &mut self,
        _panic: Box<dyn std::any::Any + Send + 'static>,
    ) -> axum::http::Response<Self::ResponseBody> {
        tracing::error!("handler panicked");
        let resp: Response = ApiError::internal().into_response();
        resp
    }
}

/// The layer.
pub fn layer() -> CatchPanicLayer<JsonPanic> {
    CatchPanicLayer::custom(JsonPanic)
}
