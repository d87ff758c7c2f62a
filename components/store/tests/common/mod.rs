//! Fixtures shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, reason = "test fixtures")]

pub mod etcd;
