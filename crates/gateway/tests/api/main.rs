//! Integration tests: a real gateway in front of real upstreams, all on
//! port 0, driven by a real HTTP client.

mod helpers;

mod edge;
mod errors;
mod headers;
mod lifecycle;
mod logging;
mod process;
mod recorder;
mod routing;
mod seams;
mod security;
mod streaming;
mod upstream;
