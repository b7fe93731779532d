//! What an operator runs a server with. At the top of the layering with
//! `http_api.rs`: it reads `ServerShared` and is wired in by `server.rs`.

pub(crate) mod admin;
