//! Async functions as handlers, axum-style: any `async fn` whose arguments
//! are extractors and whose return value is a reply.

use super::context::{FromMessage, MessageContext};
use super::reply::{IntoReply, Reply};
use crate::broker::BoxFuture;
use std::future::Future;

/// An async function usable as a handler for an application destination.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stompbox handler",
    note = "a handler is an async fn taking up to 8 extractors (Path, Json, String, Bytes, Headers, SessionId, User, State, Messaging, Destination) and returning something that implements IntoReply"
)]
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Runs the handler.
    fn call(self, context: MessageContext, state: S) -> BoxFuture<'static, Reply>;
}

macro_rules! impl_handler {
    ($($ty:ident),*) => {
        impl<F, Fut, R, S, $($ty,)*> Handler<($($ty,)*), S> for F
        where
            F: FnOnce($($ty,)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoReply,
            S: Send + Sync + 'static,
            $($ty: FromMessage<S> + Send + 'static,)*
        {
            #[allow(non_snake_case, unused_variables)]
            fn call(self, context: MessageContext, state: S) -> BoxFuture<'static, Reply> {
                // Extract before the future is built, so that no borrow of
                // the context lives in it.
                $(
                    let $ty = match $ty::from_message(&context, &state) {
                        Ok(value) => value,
                        Err(rejection) => {
                            let reply = Reply::Error(rejection.to_string());
                            return Box::pin(async move { reply });
                        }
                    };
                )*
                Box::pin(async move { self($($ty,)*).await.into_reply() })
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
