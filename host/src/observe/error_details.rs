//! The request id in an error's details: gRPC's rich error model (`grpc-status-details-bin`,
//! a `google.rpc.Status` carrying a `google.rpc.RequestInfo`), which grpcurl and the
//! google.rpc-aware clients of every language print beside the message. The message
//! itself is left as the handler wrote it.

use base64::Engine;
use http::{HeaderMap, HeaderValue};

pub const DETAILS_HEADER: &str = "grpc-status-details-bin";
const REQUEST_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RequestInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.RequestInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestInfo {
    #[prost(string, tag = "1")]
    request_id: String,
    #[prost(string, tag = "2")]
    serving_data: String,
}

/// Adds the details to `headers` (a trailers-only response's headers, or the trailers)
/// when they hold an error status and no details yet.
pub fn add_request_id(headers: &mut HeaderMap, request_id: &HeaderValue) {
    let code = headers
        .get("grpc-status")
        .and_then(|code| code.to_str().ok())
        .and_then(|code| code.parse::<i32>().ok())
        .unwrap_or(0);
    if code == 0 || headers.contains_key(DETAILS_HEADER) {
        return;
    }
    let message = headers
        .get("grpc-message")
        .map(|message| percent_encoding::percent_decode(message.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let info = RequestInfo {
        request_id: request_id.to_str().unwrap_or_default().to_owned(),
        serving_data: String::new(),
    };
    let status = RpcStatus {
        code,
        message,
        details: vec![prost_types::Any {
            type_url: REQUEST_INFO_TYPE.to_owned(),
            value: prost::Message::encode_to_vec(&info),
        }],
    };
    let encoded =
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(prost::Message::encode_to_vec(&status));
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(DETAILS_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_gets_a_request_info_detail_and_success_gets_none() {
        let id = HeaderValue::from_static("req-42");
        let mut ok = HeaderMap::new();
        ok.insert("grpc-status", HeaderValue::from_static("0"));
        add_request_id(&mut ok, &id);
        assert!(!ok.contains_key(DETAILS_HEADER));

        let mut error = HeaderMap::new();
        error.insert("grpc-status", HeaderValue::from_static("5"));
        error.insert("grpc-message", HeaderValue::from_static("no%20such%20namespace"));
        add_request_id(&mut error, &id);
        let encoded = error.get(DETAILS_HEADER).expect("details on an error");
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.as_bytes()).unwrap();
        let status: RpcStatus = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!((status.code, status.message.as_str()), (5, "no such namespace"));
        assert_eq!(status.details[0].type_url, REQUEST_INFO_TYPE);
        let info: RequestInfo = prost::Message::decode(status.details[0].value.as_slice()).unwrap();
        assert_eq!(info.request_id, "req-42");
    }
}
