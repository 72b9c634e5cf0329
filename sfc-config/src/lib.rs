//! What the user asks for and what the dataplane must hold: the resource model and its YAML
//! documents ([`model`], [`document`]), the checks an apply must pass ([`validate`]), and the
//! compiler that turns a valid state into the exact contents of one generation of the BPF maps
//! ([`compile`]). Pure: no kernel, no BPF toolchain, so `sfcctl validate` runs it anywhere.

pub mod changes;
pub mod compile;
pub mod document;
pub mod model;
pub mod nodes;
pub mod plan;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;
