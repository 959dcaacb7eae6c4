//! What the suites share: the two harnesses and the assertions on the contract's responses.

pub(crate) mod process;

pub(crate) use process::*;
