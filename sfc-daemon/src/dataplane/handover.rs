//! How a generation changes hands when several nodes steer the same chains. A packet carries
//! the revision it was classified on to the next node, which steers it on that revision:
//! so a node flips to a revision only once every other node takes packets of it, and
//! overwrites a generation only once no other node still sends packets of its revision. The
//! cluster's side of it (who holds and sends what) is `cluster::handover`; on one node there
//! is nobody to wait for.

/// What the dataplane tells the other nodes, and waits for, around a flip. Revisions are the
/// low 32 bits packets carry; 0 is none.
pub trait Handover: Send {
    /// The two generations now take packets of these revisions.
    fn holding(&mut self, revisions: [u32; 2]);
    /// Whether another node already sends packets of `revision`.
    fn sent_elsewhere(&mut self, revision: u32) -> bool;
    /// Returns once no other node sends packets of `revision` any more (bounded in time).
    fn until_unsent(&mut self, revision: u32);
    /// Returns true once every other node takes packets of `revision` (bounded in time), false
    /// when a newer revision overtook it: then this node does not flip to it.
    fn until_held(&mut self, revision: u32) -> bool;
    /// This node's packets now carry `revision`; those of flows already inside a chain may
    /// carry `previous` for two generation leases more.
    fn flipped(&mut self, previous: u32, revision: u32);
}

/// A node on its own.
pub struct Alone;

impl Handover for Alone {
    fn holding(&mut self, _: [u32; 2]) {}
    fn sent_elsewhere(&mut self, _: u32) -> bool {
        false
    }
    fn until_unsent(&mut self, _: u32) {}
    fn until_held(&mut self, _: u32) -> bool {
        true
    }
    fn flipped(&mut self, _: u32, _: u32) {}
}

/// What came of [`super::Dataplane::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steered {
    /// The image is the active generation.
    Active,
    /// It is written, but another node already holds a newer revision: this node keeps
    /// steering the one before until it has that newer one.
    Overtaken,
}
