//! A gRPC reflection client for tests: what a server describes about
//! itself (`grpc.reflection.v1`), as `grpcurl list` and `grpcurl describe`
//! see it.

use std::net::SocketAddr;

use futures::StreamExt as _;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Why a reflection question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// The server could not be reached.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed.
    #[error("reflection call: {0}")]
    Call(#[from] tonic::Status),
    /// The stream ended without an answer.
    #[error("no reflection answer")]
    NoAnswer,
}

async fn ask(
    addr: SocketAddr,
    request: MessageRequest,
) -> Result<ServerReflectionResponse, ReflectionError> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ReflectionError::Connect { addr, source })?
        .connect()
        .await
        .map_err(|source| ReflectionError::Connect { addr, source })?;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    match answers.next().await {
        Some(answer) => Ok(answer?),
        None => Err(ReflectionError::NoAnswer),
    }
}

/// The fully qualified services the server at `addr` lists, sorted.
///
/// # Errors
/// [`ReflectionError`] when the server does not answer.
pub async fn list_services(addr: SocketAddr) -> Result<Vec<String>, ReflectionError> {
    let answer = ask(addr, MessageRequest::ListServices(String::new())).await?;
    let mut names: Vec<String> = match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        _ => Vec::new(),
    };
    names.sort();
    Ok(names)
}

/// Whether the server at `addr` can describe `symbol` (a service, method
/// or message name): `grpcurl describe <symbol>` works.
///
/// # Errors
/// [`ReflectionError`] when the server does not answer.
pub async fn describes(addr: SocketAddr, symbol: &str) -> Result<bool, ReflectionError> {
    let answer = match ask(
        addr,
        MessageRequest::FileContainingSymbol(symbol.to_owned()),
    )
    .await
    {
        Ok(a) => a,
        // tonic-reflection ends the stream with NOT_FOUND for a symbol it
        // does not know (the protocol's ErrorResponse is the other way).
        Err(ReflectionError::Call(s)) if s.code() == tonic::Code::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(matches!(
        answer.message_response,
        Some(MessageResponse::FileDescriptorResponse(ref r)) if !r.file_descriptor_proto.is_empty()
    ))
}
