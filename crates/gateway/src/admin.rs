//! The admin listener (`ADMIN_HOST`:`ADMIN_PORT`, default `0.0.0.0:8090`):
//! `GET /metrics` and `GET /health`, apart from the public port, so that
//! the metrics are never reachable through the ingress that exposes the
//! gateway. Probes keep `GET /health` on the public port too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use dwp_core::Envelope;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::ResponseBody;
use crate::error::{GatewayError, full, json_response};
use crate::metrics::Metrics;

/// Serves the admin endpoints on `listener` for as long as the future runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let response = answer(&req, &metrics);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// `/health`, `/metrics`, or 404.
fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<ResponseBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => health(),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full(metrics.render()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(dwp_core::metrics::CONTENT_TYPE),
            );
            response
        }
        (_, path) => GatewayError::NotFound(path.to_owned()).into_response(),
    }
}

/// The liveness answer (also served on the public port).
pub fn health() -> Response<ResponseBody> {
    json_response(
        StatusCode::OK,
        Envelope::success("UP", serde_json::json!({"status": "UP"})).to_json(),
    )
}
