//! Steering across the nodes of a cluster: which member sides and chain ends of the image are
//! on other nodes (and where those are), which of this node's the others send packets to,
//! and which nodes tunnel packets are taken from. Read off the group tables and verdicts
//! made, so that it is redone whenever they are.

use std::collections::BTreeMap;

use sfc_common::{action, remote_id, Member, FLAG_DELIVER_PEER, REMOTE, SLOT_PEER};

use super::{tunnel_peer, Compiler, Role, Side};
use crate::model::Kind;

impl Compiler<'_> {
    /// Fills the image's `revision`, `remotes`, `landing` and `tunnel_peers` (in a cluster;
    /// outside one they stay empty), `taps` being the member each tap group copies to. Two
    /// interfaces whose ids collide are refused: packets for one would reach the other.
    pub(super) fn tunnels(&mut self, taps: &BTreeMap<&String, Member>) {
        let Some(cluster) = &self.interfaces.cluster else {
            return;
        };
        let image = &mut self.image;
        image.revision = cluster.revision;
        image.tunnel_peers = cluster.peers.iter().map(|a| tunnel_peer(*a)).collect();
        // Every interface that has an id here, by id.
        let mut named: BTreeMap<u32, String> = BTreeMap::new();
        let mut collisions = Vec::new();
        let mut name = |id: u32, qualified: String| {
            if let Some(other) = named.insert(id, qualified.clone()) {
                if other != qualified {
                    collisions.push((other, qualified));
                }
            }
        };
        for (qualified, addr) in &cluster.remote {
            let id = remote_id(qualified);
            name(id, qualified.clone());
            let used = image
                .rings
                .iter()
                .flatten()
                .any(|e| e.ingress.ifindex == id || e.egress.ifindex == id)
                || image
                    .verdicts()
                    .any(|v| v.deliver_ifindex == id || v.tap_ifindex == id);
            if used {
                image.remotes.insert(id, tunnel_peer(*addr));
            }
        }
        let names: BTreeMap<u32, &String> = self
            .interfaces
            .links
            .values()
            .map(|l| (l.index, &l.name))
            .collect();
        let mut landing = BTreeMap::new();
        let mut land = |member: Member, side: u32| {
            if member.ifindex == 0 || member.ifindex & REMOTE != 0 {
                return;
            }
            if let Some(ifname) = names.get(&member.ifindex) {
                let qualified = format!("{}/{ifname}", cluster.node);
                let id = remote_id(&qualified);
                name(id, qualified);
                landing.insert(id, (member, side));
            }
        };
        for e in image.rings.iter().flatten() {
            land(e.ingress, Side::key(e.ingress.ifindex, Role::Ingress));
            let role = if e.egress.ifindex == e.ingress.ifindex {
                Role::Both
            } else {
                Role::Egress
            };
            land(e.egress, Side::key(e.egress.ifindex, role));
        }
        // A tap here gets copies from the nodes where the hops before it are.
        for tap in taps.values() {
            land(*tap, Side::key(tap.ifindex, Role::Ingress));
        }
        for v in image.verdicts().filter(|v| v.action == action::DELIVER) {
            let peer = v.flags & FLAG_DELIVER_PEER != 0;
            let end = Member {
                ifindex: v.deliver_ifindex,
                mac: v.deliver_mac,
                slot: if peer { SLOT_PEER } else { 0 },
            };
            land(end, 0);
        }
        image.landing = landing;
        for (a, b) in collisions {
            let (kind, object) = self.referring_to(&a);
            self.error(
                kind,
                &object,
                "metadata.name",
                format!("interfaces {a:?} and {b:?} have the same tunnel id; rename one of them"),
            );
        }
    }

    /// An object that names interface `qualified` (`NODE/IFNAME`), for an error about it.
    fn referring_to(&self, qualified: &str) -> (Kind, String) {
        let node = self.interfaces.cluster.as_ref().map(|c| c.node.as_str());
        let local = qualified
            .split_once('/')
            .filter(|(n, _)| Some(*n) == node)
            .map(|(_, ifname)| ifname);
        let names = |iface: &String| iface == qualified || Some(iface.as_str()) == local;
        if let Some((name, _)) = self
            .state
            .port_pairs
            .iter()
            .find(|(_, pp)| names(&pp.ingress) || names(&pp.egress))
        {
            return (Kind::PortPair, name.clone());
        }
        let classifier = self.state.flow_classifiers.iter().find(|(_, fc)| {
            names(&fc.logical_source_port)
                || fc.logical_destination_port.as_ref().is_some_and(names)
        });
        match classifier {
            Some((name, _)) => (Kind::FlowClassifier, name.clone()),
            None => (Kind::PortPair, qualified.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use sfc_common::{action, remote_id, RingEntry};

    use crate::{
        compile::{
            compile,
            tests::{classifier, veth},
            tunnel_peer, Cluster, Interfaces,
        },
        model::State,
        testing::{chain, group, pair},
        validate::Origins,
    };

    #[test]
    fn members_and_ends_on_other_nodes_go_through_the_tunnel_and_local_ones_take_from_it() {
        // Node n1's view: one member here, one on n2 (alive), one on n3 (lost); the chain
        // ends on n2.
        let mut s = State::default();
        pair(&mut s, "p1", "sf1-in", "sf1-out");
        pair(&mut s, "p2", "n2/sf2-in", "n2/sf2-out");
        pair(&mut s, "p3", "n3/sf3-in", "n3/sf3-out");
        group(&mut s, "g", &["p1", "p2", "p3"]);
        classifier(
            &mut s,
            "fc",
            "{protocol: udp, logicalSourcePort: vm-src, logicalDestinationPort: n2/vm-dst}",
        );
        chain(&mut s, "c", &["g"], &["fc"], false);
        let mut i = Interfaces::default();
        for (n, name) in ["sf1-in", "sf1-out", "vm-src"].iter().enumerate() {
            veth(&mut i, name, n as u32 + 1);
        }
        let n2: IpAddr = "10.0.0.2".parse().unwrap();
        let n3: IpAddr = "10.0.0.3".parse().unwrap();
        i.cluster = Some(Cluster {
            node: "n1".into(),
            revision: 7,
            remote: ["n2/sf2-in", "n2/sf2-out", "n2/vm-dst"]
                .into_iter()
                .map(|n| (n.to_string(), n2))
                .collect(),
            peers: [n2, n3].into(),
        });
        let image = compile(&s, &i, &Origins::in_cluster()).unwrap();

        assert_eq!(image.revision, 7);
        assert_eq!(
            image.tunnel_peers,
            [tunnel_peer(n2), tunnel_peer(n3)].into()
        );
        // The group's table holds the member here and the one on n2, not the lost one.
        let members: std::collections::BTreeSet<u32> = image.rings[0]
            .iter()
            .map(|e: &RingEntry| e.ingress.ifindex)
            .collect();
        assert_eq!(members, [1, remote_id("n2/sf2-in")].into());
        // What goes to n2 (the member's ingress, the chain's end) is sent to its address.
        assert_eq!(
            image.remotes,
            [
                (remote_id("n2/sf2-in"), tunnel_peer(n2)),
                (remote_id("n2/vm-dst"), tunnel_peer(n2)),
            ]
            .into()
        );
        let end = image
            .verdicts()
            .find(|v| v.action == action::DELIVER)
            .expect("the chain's end");
        assert_eq!(end.deliver_ifindex, remote_id("n2/vm-dst"));
        // Other nodes send into the member here by its name on this node; nothing is sent
        // into a one-way chain's egress.
        let landing: Vec<(u32, u32)> = image
            .landing
            .iter()
            .map(|(id, (m, _))| (*id, m.ifindex))
            .collect();
        assert_eq!(landing, [(remote_id("n1/sf1-in"), 1)]);
        assert!(
            image.notes.iter().any(|n| n.contains("n3/sf3-in")),
            "{:?}",
            image.notes
        );
    }

    #[test]
    fn a_tap_on_another_node_gets_its_copies_through_the_tunnel() {
        // Chain g1 (SF1 on n1), tap t (on n2), g3 (SF3 on n3), from vm-src on n1, as node
        // `node` sees it (its own interfaces unqualified).
        let addr = |k: u8| -> IpAddr { format!("10.0.0.{k}").parse().unwrap() };
        let interfaces = [(1, "sf1-in"), (1, "sf1-out"), (1, "vm-src"), (2, "tap-in")]
            .into_iter()
            .chain([(3, "sf3-in"), (3, "sf3-out")]);
        let view = |node: u8| {
            let name = |k: u8, n: &str| match k == node {
                true => n.to_string(),
                false => format!("n{k}/{n}"),
            };
            let mut s = State::default();
            pair(&mut s, "p1", &name(1, "sf1-in"), &name(1, "sf1-out"));
            pair(&mut s, "pt", &name(2, "tap-in"), &name(2, "tap-in"));
            pair(&mut s, "p3", &name(3, "sf3-in"), &name(3, "sf3-out"));
            group(&mut s, "g1", &["p1"]);
            group(&mut s, "t", &["pt"]);
            s.port_pair_groups.get_mut("t").unwrap().tap_enabled = true;
            group(&mut s, "g3", &["p3"]);
            let source = name(1, "vm-src");
            classifier(
                &mut s,
                "fc",
                &format!("{{protocol: udp, logicalSourcePort: {source}}}"),
            );
            chain(&mut s, "c", &["g1", "t", "g3"], &["fc"], false);
            let mut i = Interfaces::default();
            for (n, (_, name)) in interfaces.clone().filter(|(k, _)| *k == node).enumerate() {
                veth(&mut i, name, n as u32 + 1);
            }
            i.cluster = Some(Cluster {
                node: format!("n{node}"),
                revision: 1,
                remote: interfaces
                    .clone()
                    .filter(|(k, _)| *k != node)
                    .map(|(k, n)| (name(k, n), addr(k)))
                    .collect(),
                peers: [1, 2, 3]
                    .into_iter()
                    .filter(|k| *k != node)
                    .map(addr)
                    .collect(),
            });
            compile(&s, &i, &Origins::in_cluster()).unwrap()
        };
        // On n1, what leaves SF1 is copied to the tap on n2 (in the tunnel) and sent on to n3.
        let n1 = view(1);
        let tap = remote_id("n2/tap-in");
        let past_sf1 = n1
            .verdicts()
            .find(|v| v.tap_ifindex != 0)
            .expect("a verdict with the tap's copy");
        assert_eq!((past_sf1.hop, past_sf1.action), (1, action::STEER));
        assert_eq!(past_sf1.tap_ifindex, tap);
        assert_eq!(n1.remotes.get(&tap), Some(&tunnel_peer(addr(2))));
        assert!(n1.notes.is_empty(), "{:?}", n1.notes);
        // On n2, the copies land in the tap, counted in its side's slot.
        let n2 = view(2);
        let landing: Vec<(u32, u32, u32)> = n2
            .landing
            .iter()
            .map(|(id, (m, side))| (*id, m.ifindex, *side))
            .collect();
        assert_eq!(landing, [(tap, 1, 1)]);
    }
}
