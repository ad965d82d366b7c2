//! fastpath's vhost-user backend (a virtio-net device served over a unix socket).
//!
//! The port, protocol and virtqueue data path are tracked by the vhost-user issue; until then
//! this crate only reserves its place in the workspace and its spec form, so that the CLI can
//! name it in errors as not yet available.
#![deny(missing_docs)]

/// The port form this crate will accept.
pub const FORM: &str = "vhost-user:PATH[,client][,queues=N][,reconnect=SECS]";
