//! What the suites share: the two harnesses and the assertions on the contract's responses.

pub(crate) mod db;
pub(crate) mod gateway;
pub(crate) mod process;
pub(crate) mod receiver;
pub(crate) mod upstream;

pub(crate) use gateway::TestGateway;
pub(crate) use process::*;
