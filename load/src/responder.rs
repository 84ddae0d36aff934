//! The floor under every gRPC server here: an HTTP/2 server (hyper, as tonic uses) that
//! reads each request's body and answers every call with the same pre-framed gRPC
//! GetResponse (a 100-byte value) and `grpc-status: 0`. No routing, no protobuf
//! decoding, no tower stack: what is left is HTTP/2 framing and HPACK, which no gRPC
//! server can avoid.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A GetResponse{found: true, value: 100 bytes of 'v'} with its 5-byte gRPC frame header.
fn framed_response() -> Bytes {
    let mut message = vec![0x08, 0x01, 0x12, 100];
    message.extend_from_slice(&[b'v'; 100]);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

type Answer =
    StreamBody<futures_util::stream::Iter<std::array::IntoIter<Result<Frame<Bytes>, Infallible>, 2>>>;

async fn answer(request: http::Request<Incoming>, body: Bytes) -> Result<http::Response<Answer>, Infallible> {
    // Read the request as a server must before it can answer it.
    let _ = request.into_body().collect().await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let mut response = http::Response::new(StreamBody::new(futures_util::stream::iter(frames)));
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
    Ok(response)
}

pub async fn serve(listen: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {listen}: {error}");
            std::process::exit(1);
        }
    };
    println!("responder serving on {listen}");
    let body = framed_response();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, body.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
