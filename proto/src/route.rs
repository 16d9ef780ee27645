//! One server-streaming method of a generated tonic service, served by a hand-written handler
//! with its own message types; every other method stays on the generated server.
//!
//! Why: a generated server fixes the response type, and for `observer.Observer/GetFlows` that
//! type owns a whole decoded `Flow`. The agent sends flows it already holds (encoded straight
//! from its history's shared flows) and the relay forwards the bytes an agent sent: both serve
//! GetFlows with messages of their own that encode to the same bytes on the wire.

use std::{
    convert::Infallible,
    marker::PhantomData,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Request, Response, Status,
    codegen::{Body, BoxFuture, Service, StdError, http, tokio_stream::Stream},
    server::{Grpc, NamedService, ServerStreamingService},
};
use tonic_prost::ProstCodec;

/// Answers one request with a stream of responses.
pub type Handler<Req, S> = Arc<dyn Fn(Request<Req>) -> Result<Response<S>, Status> + Send + Sync>;

/// `generated`, except that requests to `path` go to `handler`, with requests decoded as `Req`
/// and responses encoded from the items of `S` (`Result<Resp, Status>`).
pub struct StreamingRoute<G, Req, Resp, S> {
    path: &'static str,
    generated: G,
    handler: Handler<Req, S>,
    max_message_size: Option<usize>,
    _resp: PhantomData<fn() -> Resp>,
}

impl<G: Clone, Req, Resp, S> Clone for StreamingRoute<G, Req, Resp, S> {
    fn clone(&self) -> Self {
        StreamingRoute {
            path: self.path,
            generated: self.generated.clone(),
            handler: self.handler.clone(),
            max_message_size: self.max_message_size,
            _resp: PhantomData,
        }
    }
}

impl<G, Req, Resp, S> StreamingRoute<G, Req, Resp, S> {
    /// Routes `path` (e.g. `/observer.Observer/GetFlows`) to `handler`, the rest to `generated`.
    pub fn new(path: &'static str, generated: G, handler: Handler<Req, S>) -> Self {
        StreamingRoute {
            path,
            generated,
            handler,
            max_message_size: None,
            _resp: PhantomData,
        }
    }

    /// Limits decoded requests and encoded responses of the routed method (tonic's defaults
    /// otherwise: 4 MiB decoded, unlimited encoded), as the generated server's options do for
    /// the others.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }
}

impl<G: NamedService, Req, Resp, S> NamedService for StreamingRoute<G, Req, Resp, S> {
    const NAME: &'static str = G::NAME;
}

/// The handler as tonic's server-streaming method.
struct Method<Req, S>(Handler<Req, S>);

impl<Req, Resp, S> ServerStreamingService<Req> for Method<Req, S>
where
    S: Stream<Item = Result<Resp, Status>>,
{
    type Response = Resp;
    type ResponseStream = S;
    type Future = std::future::Ready<Result<Response<S>, Status>>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        std::future::ready((self.0)(request))
    }
}

impl<G, B, Req, Resp, S> Service<http::Request<B>> for StreamingRoute<G, Req, Resp, S>
where
    G: Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<tonic::body::Body>, Infallible>,
        >,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != self.path {
            return self.generated.call(req);
        }
        let method = Method(self.handler.clone());
        let limit = self.max_message_size;
        Box::pin(async move {
            // What a generated server does for a server-streaming method (no compression).
            let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default())
                .apply_max_message_size_config(limit, limit);
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}
