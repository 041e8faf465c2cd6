//! The error answer every route documents in the OpenAPI document: the
//! envelope (CONTRACT.md section 6), `data` any JSON (null, or the current
//! state on a 409). Success answers are `Envelope<T>` of their own types. Apart from
//! [`crate::openapi`], which lists the handlers, so that handlers and the
//! document do not import each other.

use dwp_core::Envelope;

/// An error answer: the envelope, `data` any JSON.
pub type Reply = Envelope<serde_json::Value>;
