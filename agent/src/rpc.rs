//! Calls to the coordinators' `AgentService`: the client with the message limits both sides
//! set, and the agent's error for a failed call.

use strongbox_proto::v1::agent_service_client::AgentServiceClient;
use strongbox_proto::MAX_MESSAGE_BYTES;
use tonic::transport::Channel;

use crate::error::Error;

/// An `AgentService` client over `ch`, with the shared message limit.
pub fn client(ch: Channel) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A failed call (`what` says which, for the message).
pub fn rpc(what: &str, s: tonic::Status) -> Error {
    Error::Rpc {
        what: what.to_string(),
        code: s.code(),
        message: s.message().to_string(),
    }
}
