//! Parity with OpenStack networking-sfc: the validation decisions of its unit tests, translated
//! into chain files and the outcome our contract (`/work/shared/spec/resources.md`, mirrored
//! in `docs/resources.md`) gives them, run through what `sfcctl validate` runs
//! ([`plan`] on an empty state, without interfaces).
//!
//! Each case names the peer test it comes from (`file::Class::method` in
//! github.com/openstack/networking-sfc), the chain file, and the outcome: accepted, or refused
//! with an error that names the file, the object (kind and name) and the field, with some words
//! of the message. Translation rules:
//!
//! - Neutron ports become host interface names. A port UUID that does not exist (404 there)
//!   becomes the name of an absent interface, which `validate` accepts (the member or
//!   classifier waits for it); a value that is no UUID (400 there) becomes a value that cannot
//!   be an interface name.
//! - `*_port_range_min`/`*_port_range_max` become `"MIN:MAX"`; a range open on one side
//!   becomes `"MIN:65535"` or `"1:MAX"`.
//! - networking-sfc refuses, when a classifier is created, one that overlaps an existing
//!   classifier at the same logical ports, chained or not. Our rule is between chains: two
//!   classifiers of different chains entering at the same `logicalSourcePort` must not
//!   overlap. Its conflict cases therefore become two chains with one classifier each,
//!   entering at one port.
//! - networking-sfc allows a PortPairGroup without pairs; ours need one, so every group gets
//!   a pair of its own.
//! - Requests made one after another there (create, then create or update) become a state
//!   applied first (`before`) and the file applied on it: the error is reported on the object
//!   being applied.
//! - Where our contract deliberately differs, the case says `DIFFERS:` and why.
//!
//! Run one case, or those whose name contains a word: `PARITY_CASE=word cargo test -p
//! sfc-config --test networking_sfc_parity`.

use std::fmt;

use sfc_config::{compile::Interfaces, document::ConfigError, model::State, plan::plan};

/// The file each case's chain file is validated as.
const FILE: &str = "chain.yaml";
/// The file the `before` state is applied from.
const APPLIED: &str = "applied.yaml";

// ---------------------------------------------------------------------------------------------
// Chain files.

/// One document per `Kind "name" "spec"`, the spec a YAML flow mapping, each ending in `---`.
macro_rules! yaml {
    ($($kind:ident $name:literal $spec:literal)*) => {
        concat!($(
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: ",
            stringify!($kind),
            "\nmetadata: {name: ",
            $name,
            "}\nspec: ",
            $spec,
            "\n---\n",
        )*)
    };
}

/// Service function `n`: PortPair `PPn` (`sfn-in` -> `sfn-out`) and its PortPairGroup `PGn`.
macro_rules! sf {
    ($n:literal) => {
        concat!(
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPair\nmetadata: {name: PP",
            $n,
            "}\nspec: {ingress: sf",
            $n,
            "-in, egress: sf",
            $n,
            "-out}\n---\n",
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {name: PG",
            $n,
            "}\nspec: {portPairs: [PP",
            $n,
            "]}\n---\n",
        )
    };
}

/// Two chains at one source port, for networking-sfc's classifier conflict tests: `PC1`
/// through `PG1` with `FC1`, then `PC2` through `PG2` with `FC2`, each FlowClassifier spec
/// given without its `logicalSourcePort` (`tap-vm1` for both).
macro_rules! two_chains_at_one_port {
    ($fc1:literal, $fc2:literal) => {
        concat!(
            sf!("1"),
            sf!("2"),
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: FC1}\nspec: {logicalSourcePort: tap-vm1, ",
            $fc1,
            "}\n---\n",
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"),
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: FC2}\nspec: {logicalSourcePort: tap-vm1, ",
            $fc2,
            "}\n---\n",
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"),
        )
    };
}

/// One classifier at `tap-vm1` (its other fields given), alone: networking-sfc's checks of a
/// classifier's own fields.
macro_rules! classifier {
    ($fields:literal) => {
        concat!(
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: FC1}\nspec: {logicalSourcePort: tap-vm1, ",
            $fields,
            "}\n---\n",
        )
    };
}

/// One classifier at `tap-vm1` (its other fields given) steered by chain `PC1` through `PG1`:
/// the classifier is compiled, not only checked.
macro_rules! chained_classifier {
    ($fields:literal) => {
        concat!(
            sf!("1"),
            classifier!($fields),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"),
        )
    };
}

// ---------------------------------------------------------------------------------------------
// Peer tests.

macro_rules! sfc_db {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/db/test_sfc_db.py::SfcDbPluginTestCase::",
            $t
        )
    };
}
macro_rules! fc_db {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/db/test_flowclassifier_db.py::FlowClassifierDbPluginTestCase::",
            $t
        )
    };
}
macro_rules! sfc_ext {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/extensions/test_sfc.py::SfcExtensionTestCase::",
            $t
        )
    };
}
macro_rules! fc_ext {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/extensions/test_flowclassifier.py::FlowClassifierExtensionTestCase::",
            $t
        )
    };
}
macro_rules! sfc_plugin {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/services/sfc/test_plugin.py::SfcPluginTestCase::",
            $t
        )
    };
}
macro_rules! fc_plugin {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/services/flowclassifier/test_plugin.py::FlowClassifierPluginTestCase::",
            $t
        )
    };
}
macro_rules! sfc_ovs {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/services/sfc/drivers/ovs/test_driver.py::OVSSfcDriverTestCase::",
            $t
        )
    };
}
macro_rules! fc_ovs {
    ($t:literal) => {
        concat!(
            "networking_sfc/tests/unit/services/flowclassifier/drivers/ovs/test_driver.py::OVSFlowClassifierDriverTestCase::",
            $t
        )
    };
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// What our contract does with a case's chain file.
enum Outcome {
    Accept,
    /// Refused with (at least) an error about `kind "name"`, `field`, whose message holds
    /// `words`.
    Refuse {
        kind: &'static str,
        name: &'static str,
        field: &'static str,
        words: &'static str,
    },
}

use Outcome::Accept;

const fn refuse(
    kind: &'static str,
    name: &'static str,
    field: &'static str,
    words: &'static str,
) -> Outcome {
    Outcome::Refuse {
        kind,
        name,
        field,
        words,
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Accept => f.write_str("accepted"),
            Outcome::Refuse {
                kind,
                name,
                field,
                words,
            } => write!(
                f,
                "refused: {FILE}: {kind} {name:?}: {field}: ...{words}..."
            ),
        }
    }
}

struct Case {
    name: &'static str,
    /// The networking-sfc test it comes from: `file::Class::method`.
    peer: &'static str,
    /// Applied first (empty: nothing).
    before: &'static str,
    yaml: &'static str,
    expect: Outcome,
}

fn case(name: &'static str, peer: &'static str, yaml: &'static str, expect: Outcome) -> Case {
    Case {
        name,
        peer,
        before: "",
        yaml,
        expect,
    }
}

fn update(
    name: &'static str,
    peer: &'static str,
    before: &'static str,
    yaml: &'static str,
    expect: Outcome,
) -> Case {
    Case {
        name,
        peer,
        before,
        yaml,
        expect,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // ---------------------------------------------------------------------------------
        // PortPair
        case(
            "port_pair",
            sfc_db!("test_create_port_pair"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            Accept,
        ),
        case(
            "port_pair_all_fields",
            sfc_db!("test_create_port_pair_all_fields"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, ingressMac: '02:00:00:00:01:01', weight: 2}"),
            Accept,
        ),
        case(
            "port_pair_ingress_is_egress",
            sfc_db!("test_create_port_pair_with_src_dst_same_port"),
            yaml!(PortPair "PP1" "{ingress: sf1, egress: sf1}"),
            Accept,
        ),
        case(
            "port_pair_empty",
            sfc_db!("test_create_port_pair_empty_input"),
            yaml!(PortPair "PP1" "{}"),
            refuse("PortPair", "PP1", "spec", "missing field `ingress`"),
        ),
        case(
            "port_pair_without_ingress",
            sfc_db!("test_create_port_pair_with_no_ingress"),
            yaml!(PortPair "PP1" "{egress: sf1-out}"),
            refuse("PortPair", "PP1", "spec", "missing field `ingress`"),
        ),
        case(
            "port_pair_without_egress",
            sfc_db!("test_create_port_pair_with_no_egress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in}"),
            refuse("PortPair", "PP1", "spec", "missing field `egress`"),
        ),
        // A port id that is no UUID: an ingress that can be no interface name.
        case(
            "port_pair_ingress_not_an_interface_name",
            sfc_db!("test_create_port_pair_with_nouuid_ingress"),
            yaml!(PortPair "PP1" "{ingress: 'sf1/in', egress: sf1-out}"),
            refuse("PortPair", "PP1", "spec.ingress", "is not an interface name"),
        ),
        case(
            "port_pair_egress_not_an_interface_name",
            sfc_db!("test_create_port_pair_with_nouuid_egress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-egress-too-long}"),
            refuse("PortPair", "PP1", "spec.egress", "is not an interface name"),
        ),
        case(
            "port_pair_ingress_not_an_interface_name_api",
            sfc_ext!("test_create_port_pair_nouuid_ingress"),
            yaml!(PortPair "PP1" "{ingress: 'sf1 in', egress: sf1-out}"),
            refuse("PortPair", "PP1", "spec.ingress", "is not an interface name"),
        ),
        case(
            "port_pair_egress_not_an_interface_name_api",
            sfc_ext!("test_create_port_pair_nouuid_egress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: 'sf1:out'}"),
            refuse("PortPair", "PP1", "spec.egress", "is not an interface name"),
        ),
        // DIFFERS: a port that does not exist is a 404 there; here an absent interface is
        // accepted offline (the member is skipped until the interface appears).
        case(
            "port_pair_absent_ingress",
            sfc_db!("test_create_port_pair_with_unknown_ingress"),
            yaml!(PortPair "PP1" "{ingress: sf-gone-in, egress: sf1-out}"),
            Accept,
        ),
        case(
            "port_pair_absent_egress",
            sfc_db!("test_create_port_pair_with_unknown_egress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf-gone-out}"),
            Accept,
        ),
        // service_function_parameters has no counterpart: `weight` is a field of the spec,
        // and anything else is an unknown field.
        case(
            "port_pair_unknown_parameter",
            sfc_db!("test_create_port_pair_with_invalid_service_function_parameters"),
            yaml!(PortPair "PP1" "{ingress: sf1, egress: sf1, abc: def}"),
            refuse("PortPair", "PP1", "spec.abc", "unknown field `abc`"),
        ),
        case(
            "port_pair_unknown_parameter_api",
            sfc_ext!("test_create_port_pair_invalid_service_function_parameters"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, serviceFunctionParameters: {abc: def}}"),
            refuse("PortPair", "PP1", "spec.serviceFunctionParameters", "unknown field"),
        ),
        // DIFFERS: a port pair has no correlation here (SFs receive plain packets; only
        // `none` exists, on the chain), so any correlation on a pair is an unknown field.
        case(
            "port_pair_correlation_is_no_field",
            sfc_db!("test_create_port_pair_with_invalid_correlation"),
            yaml!(PortPair "PP1" "{ingress: sf1, egress: sf1, correlation: def}"),
            refuse("PortPair", "PP1", "spec.correlation", "unknown field"),
        ),
        case(
            "port_pair_correlation_mpls_is_no_field",
            sfc_db!("test_create_port_pair_group_consistent_correlations"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, correlation: mpls}"),
            refuse("PortPair", "PP1", "spec.correlation", "unknown field"),
        ),
        case(
            "port_pair_negative_weight",
            sfc_db!("test_create_port_pair_with_invalid_weight"),
            yaml!(PortPair "PP1" "{ingress: sf1, egress: sf1, weight: -1}"),
            refuse("PortPair", "PP1", "spec.weight", "-1"),
        ),
        case(
            "port_pair_negative_weight_api",
            sfc_ext!("test_create_port_pair_invalid_weight"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: -1}"),
            refuse("PortPair", "PP1", "spec.weight", "-1"),
        ),
        case(
            "port_pair_weight_not_a_number",
            sfc_ext!("test_create_port_pair_invalid_weight_type"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: abc}"),
            refuse("PortPair", "PP1", "spec.weight", "abc"),
        ),
        // DIFFERS: networking-sfc's weight is any non-negative integer; ours is 1..255 (a
        // weight of 0 would give the member no flows).
        case(
            "port_pair_weight_zero",
            sfc_db!("test_create_port_pair_with_invalid_weight"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: 0}"),
            refuse("PortPair", "PP1", "spec.weight", "is out of range; use 1..255"),
        ),
        case(
            "port_pair_weight_256",
            sfc_db!("test_create_port_pair_with_invalid_weight"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: 256}"),
            refuse("PortPair", "PP1", "spec.weight", "is out of range; use 1..255"),
        ),
        case(
            "port_pair_weight_255",
            sfc_db!("test_create_port_pair_all_fields"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: 255}"),
            Accept,
        ),
        // Crossed pairs (PP1 sf-a -> sf-b, PP2 sf-b -> sf-a) in a chain: each interface is the
        // ingress of one pair and the egress of the other.
        case(
            "crossed_port_pairs_in_a_chain",
            sfc_db!("test_create_port_chain_with_port_pairs"),
            yaml!(
                PortPair "PP1" "{ingress: sf-a, egress: sf-b}"
                PortPair "PP2" "{ingress: sf-b, egress: sf-a}"
                PortPairGroup "PG1" "{portPairs: [PP1]}"
                PortPairGroup "PG2" "{portPairs: [PP2]}"
                PortChain "PC1" "{portPairGroups: [PG1, PG2]}"
            ),
            Accept,
        ),
        case(
            "crossed_port_pairs_in_a_group",
            sfc_db!("test_create_port_pair_group_with_port_pairs"),
            yaml!(
                PortPair "PP1" "{ingress: sf-a, egress: sf-b}"
                PortPair "PP2" "{ingress: sf-b, egress: sf-a}"
                PortPairGroup "PG1" "{portPairs: [PP1, PP2]}"
            ),
            Accept,
        ),
        case(
            "crossed_port_pairs_listed",
            sfc_db!("test_list_port_pairs"),
            yaml!(
                PortPair "PP1" "{ingress: sf-a, egress: sf-b}"
                PortPair "PP2" "{ingress: sf-b, egress: sf-a}"
            ),
            Accept,
        ),
        // A ring: each port is the ingress of one pair and the egress of another.
        case(
            "ring_of_port_pairs_in_a_group",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(
                PortPair "PP1" "{ingress: sf-p1, egress: sf-p2}"
                PortPair "PP2" "{ingress: sf-p2, egress: sf-p3}"
                PortPair "PP3" "{ingress: sf-p3, egress: sf-p4}"
                PortPair "PP4" "{ingress: sf-p4, egress: sf-p1}"
                PortPairGroup "PG1" "{portPairs: [PP1, PP2, PP4]}"
                PortPairGroup "PG2" "{portPairs: [PP3]}"
            ),
            Accept,
        ),
        // The egress of one pair is the ingress of the next (not crossed).
        case(
            "egress_of_one_pair_is_ingress_of_another",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(
                PortPair "PP1" "{ingress: sf-p1, egress: sf-p2}"
                PortPair "PP2" "{ingress: sf-p2, egress: sf-p3}"
                PortPairGroup "PG1" "{portPairs: [PP1, PP2]}"
            ),
            Accept,
        ),
        // An interface is the ingress of at most one pair and the egress of at most one.
        // networking-sfc's sfc_db.create_port_pair refuses only a pair with the same ingress
        // and egress as another (PortPairIngressEgressInUse); the peer test's ring gives each
        // port one role of each kind.
        case(
            "same_ingress_and_egress_as_another_pair",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(
                PortPair "PP1" "{ingress: sf-p1, egress: sf-p2}"
                PortPair "PP2" "{ingress: sf-p1, egress: sf-p2}"
            ),
            refuse("PortPair", "PP2", "spec.ingress", "sf-p1"),
        ),
        // DIFFERS: networking-sfc lets two pairs share an ingress when their egresses differ;
        // here traffic coming back out of one interface must belong to one SF instance.
        case(
            "ingress_of_two_port_pairs",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(
                PortPair "PP1" "{ingress: sf-p1, egress: sf-p2}"
                PortPair "PP2" "{ingress: sf-p1, egress: sf-p3}"
            ),
            refuse("PortPair", "PP2", "spec.ingress", "sf-p1"),
        ),
        case(
            "egress_of_two_port_pairs",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(
                PortPair "PP1" "{ingress: sf-p1, egress: sf-p3}"
                PortPair "PP2" "{ingress: sf-p2, egress: sf-p3}"
            ),
            refuse("PortPair", "PP2", "spec.egress", "sf-p3"),
        ),
        update(
            "ingress_of_two_port_pairs_applied_later",
            sfc_db!("test_update_port_pair_group_consistency_checks"),
            yaml!(PortPair "PP1" "{ingress: sf-p1, egress: sf-p2}"),
            yaml!(PortPair "PP2" "{ingress: sf-p1, egress: sf-p3}"),
            refuse("PortPair", "PP2", "spec.ingress", "(already applied)"),
        ),
        // DIFFERS: networking-sfc does not let a port pair's ingress or egress be updated
        // (400); an apply replaces the object named, so the new ports are taken.
        update(
            "update_port_pair_ingress",
            sfc_db!("test_update_port_pair_ingress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            yaml!(PortPair "PP1" "{ingress: sf1-out, egress: sf1-out}"),
            Accept,
        ),
        update(
            "update_port_pair_egress",
            sfc_db!("test_update_port_pair_egress"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-in}"),
            Accept,
        ),
        // DIFFERS: service_function_parameters cannot be updated there; the weight can here.
        update(
            "update_port_pair_weight",
            sfc_db!("test_update_port_pair_service_function_parameters"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out, weight: 2}"),
            Accept,
        ),
        update(
            "update_port_pair_unchanged",
            sfc_plugin!("test_update_port_pair_driver_manager_called"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            yaml!(PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // PortPairGroup
        case(
            "port_pair_group",
            sfc_db!("test_create_port_pair_group"),
            sf!("1"),
            Accept,
        ),
        // DIFFERS: networking-sfc creates groups without pairs; a group here needs one (a hop
        // with no SF instance could steer nothing).
        case(
            "port_pair_group_without_pairs",
            sfc_db!("test_create_port_pair_group"),
            yaml!(PortPairGroup "PG1" "{portPairs: []}"),
            refuse("PortPairGroup", "PG1", "spec.portPairs", "is empty"),
        ),
        case(
            "port_pair_group_all_fields",
            sfc_db!("test_create_port_pair_group_all_fields"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: false, lbFields: [ip_src, ip_dst]}"
            ),
            Accept,
        ),
        case(
            "port_pair_group_default_parameters",
            sfc_db!("test_create_port_pair_group_with_default_parameters"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: false, lbFields: []}"
            ),
            Accept,
        ),
        case(
            "port_pair_group_every_lb_field",
            sfc_ext!("test_validate_list_of_allowed_values"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], lbFields: [eth_src, eth_dst, ip_src, ip_dst, tcp_src, tcp_dst, udp_src, udp_dst]}"
            ),
            Accept,
        ),
        case(
            "port_pair_group_illegal_lb_field_in_list",
            sfc_ext!("test_validate_list_of_allowed_values"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], lbFields: [eth_src, eth_src, illegal]}"
            ),
            refuse("PortPairGroup", "PG1", "spec.lbFields[2]", "illegal"),
        ),
        case(
            "port_pair_group_unknown_lb_field",
            sfc_ext!("test_create_port_pair_group_invalid_lb_fields"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], lbFields: [def]}"
            ),
            refuse("PortPairGroup", "PG1", "spec.lbFields[0]", "def"),
        ),
        case(
            "port_pair_group_lb_fields_not_a_list",
            sfc_ext!("test_create_port_pair_group_invalid_lb_fields_type"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], lbFields: ip_src}"
            ),
            refuse("PortPairGroup", "PG1", "spec.lbFields", "sequence"),
        ),
        case(
            "port_pair_group_unknown_parameter",
            sfc_ext!("test_create_port_pair_group_invalid_parameters"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], abc: def}"
            ),
            refuse("PortPairGroup", "PG1", "spec.abc", "unknown field"),
        ),
        // ppg_n_tuple_mapping has no counterpart here (SFs that rewrite the 5-tuple are not
        // supported): it is an unknown field.
        case(
            "port_pair_group_n_tuple_mapping_is_no_field",
            sfc_ext!("test_create_port_pair_group_invalid_ppg_n_tuple_mapping_key"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], ppgNTupleMapping: {ingressNTuple: {}}}"
            ),
            refuse("PortPairGroup", "PG1", "spec.ppgNTupleMapping", "unknown field"),
        ),
        case(
            "port_pair_group_unknown_pair",
            sfc_db!("test_create_port_pair_group_with_unknown_port_pair_id"),
            yaml!(PortPairGroup "PG1" "{portPairs: [PP9]}"),
            refuse("PortPairGroup", "PG1", "spec.portPairs[0]", "does not exist"),
        ),
        case(
            "port_pair_group_pair_not_a_name",
            sfc_db!("test_create_port_pair_group_with_nouuid_port_pair_id"),
            yaml!(PortPairGroup "PG1" "{portPairs: ['not a name']}"),
            refuse("PortPairGroup", "PG1", "spec.portPairs[0]", "does not exist"),
        ),
        case(
            "port_pair_group_pair_not_a_name_api",
            sfc_ext!("test_create_port_pair_group_nonuuid_port_pairs"),
            yaml!(PortPairGroup "PG1" "{portPairs: [nouuid]}"),
            refuse("PortPairGroup", "PG1", "spec.portPairs[0]", "does not exist"),
        ),
        update(
            "port_pair_in_two_groups",
            sfc_db!("test_create_port_pair_group_share_port_pair_id"),
            sf!("1"),
            yaml!(PortPairGroup "PG2" "{portPairs: [PP1]}"),
            refuse("PortPairGroup", "PG2", "spec.portPairs[0]", "is already in"),
        ),
        case(
            "port_pair_in_two_groups_of_one_file",
            sfc_db!("test_create_port_pair_group_share_port_pair_id"),
            concat!(sf!("1"), yaml!(PortPairGroup "PG2" "{portPairs: [PP1]}")),
            refuse("PortPairGroup", "PG2", "spec.portPairs[0]", "is already in"),
        ),
        case(
            "tap_group_of_one_pair",
            sfc_db!("test_create_tap_port_pair_group_with_single_port_pair"),
            yaml!(
                PortPair "PP1" "{ingress: tap-ids-in, egress: tap-ids-out}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
            ),
            Accept,
        ),
        case(
            "tap_group_without_parameters",
            sfc_db!("test_create_port_pair_group_with_tap_enabled_parameter_true"),
            yaml!(
                PortPair "PP1" "{ingress: tap-ids, egress: tap-ids}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
            ),
            Accept,
        ),
        case(
            "tap_group_of_two_pairs",
            sfc_db!("test_create_tap_pair_group_with_multiple_port_pairs"),
            yaml!(
                PortPair "PP1" "{ingress: tap-ids1, egress: tap-ids1}"
                PortPair "PP2" "{ingress: tap-ids2, egress: tap-ids2}"
                PortPairGroup "PG1" "{portPairs: [PP1, PP2], tapEnabled: true}"
            ),
            refuse("PortPairGroup", "PG1", "spec.tapEnabled", "exactly one PortPair"),
        ),
        update(
            "update_group_replace_pair",
            sfc_db!("test_update_port_pair_group"),
            concat!(
                sf!("1"),
                yaml!(PortPair "PP2" "{ingress: sf2-in, egress: sf2-out}")
            ),
            yaml!(PortPairGroup "PG1" "{portPairs: [PP2]}"),
            Accept,
        ),
        update(
            "update_group_to_tap_of_two_pairs",
            sfc_db!("test_update_tap_port_pair_group_consistency"),
            concat!(
                sf!("1"),
                yaml!(PortPair "PP2" "{ingress: sf2-in, egress: sf2-out}")
            ),
            yaml!(PortPairGroup "PG1" "{portPairs: [PP1, PP2], tapEnabled: true}"),
            refuse("PortPairGroup", "PG1", "spec.tapEnabled", "exactly one PortPair"),
        ),
        update(
            "update_group_unchanged",
            sfc_plugin!("test_update_port_pair_group_driver_manager_called"),
            sf!("1"),
            yaml!(PortPairGroup "PG1" "{portPairs: [PP1]}"),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // PortChain
        case(
            "port_chain",
            sfc_db!("test_create_port_chain"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            Accept,
        ),
        case(
            "port_chain_multi_groups",
            sfc_db!("test_create_port_chain_multi_port_pair_groups"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1, PG2]}")
            ),
            Accept,
        ),
        case(
            "port_chains_share_a_group",
            sfc_db!("test_create_port_chain_shared_port_pair_groups"),
            concat!(
                sf!("1"),
                sf!("2"),
                sf!("3"),
                yaml!(
                    PortChain "PC1" "{portPairGroups: [PG1, PG2]}"
                    PortChain "PC2" "{portPairGroups: [PG1, PG3]}"
                )
            ),
            Accept,
        ),
        case(
            "port_chains_same_groups_other_order",
            sfc_db!("test_create_port_chain_shared_port_pair_groups_different_order"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    PortChain "PC1" "{portPairGroups: [PG1, PG2]}"
                    PortChain "PC2" "{portPairGroups: [PG2, PG1]}"
                )
            ),
            Accept,
        ),
        update(
            "port_chains_same_groups",
            sfc_db!("test_create_port_chain_with_same_port_pair_groups"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC2" "{portPairGroups: [PG1]}"),
            refuse("PortChain", "PC2", "spec.portPairGroups", "same ordered groups"),
        ),
        case(
            "port_chains_same_groups_in_one_file",
            sfc_db!("test_create_port_chain_with_same_port_pair_groups"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    PortChain "PC1" "{portPairGroups: [PG1, PG2]}"
                    PortChain "PC2" "{portPairGroups: [PG1, PG2]}"
                )
            ),
            refuse("PortChain", "PC2", "spec.portPairGroups", "same ordered groups"),
        ),
        case(
            "port_chain_empty_groups",
            sfc_db!("test_create_port_chain_with_empty_port_pair_groups"),
            yaml!(PortChain "PC1" "{portPairGroups: []}"),
            refuse("PortChain", "PC1", "spec.portPairGroups", "is empty"),
        ),
        case(
            "port_chain_empty_groups_api",
            sfc_ext!("test_create_port_chain_empty_port_pair_groups"),
            yaml!(PortChain "PC1" "{portPairGroups: [], flowClassifiers: []}"),
            refuse("PortChain", "PC1", "spec.portPairGroups", "is empty"),
        ),
        case(
            "port_chain_no_groups",
            sfc_db!("test_create_port_chain_with_no_port_pair_groups"),
            yaml!(PortChain "PC1" "{}"),
            refuse("PortChain", "PC1", "spec", "missing field `portPairGroups`"),
        ),
        case(
            "port_chain_unknown_group",
            sfc_db!("test_create_port_chain_with_unknown_port_pair_group_id"),
            yaml!(PortChain "PC1" "{portPairGroups: [PG9]}"),
            refuse("PortChain", "PC1", "spec.portPairGroups[0]", "does not exist"),
        ),
        case(
            "port_chain_group_not_a_name",
            sfc_db!("test_create_port_chain_with_nonuuid_port_pair_group_id"),
            yaml!(PortChain "PC1" "{portPairGroups: [unknown]}"),
            refuse("PortChain", "PC1", "spec.portPairGroups[0]", "does not exist"),
        ),
        case(
            "port_chain_group_not_a_name_api",
            sfc_ext!("test_create_port_chain_nonuuid_port_pair_groups"),
            yaml!(PortChain "PC1" "{portPairGroups: [nouuid]}"),
            refuse("PortChain", "PC1", "spec.portPairGroups[0]", "does not exist"),
        ),
        case(
            "port_chain_unknown_classifier",
            sfc_db!("test_create_port_chain_unknown_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC9]}")
            ),
            refuse("PortChain", "PC1", "spec.flowClassifiers[0]", "does not exist"),
        ),
        case(
            "port_chain_classifier_not_a_name",
            sfc_db!("test_create_port_chain_nouuid_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [unknown]}")
            ),
            refuse("PortChain", "PC1", "spec.flowClassifiers[0]", "does not exist"),
        ),
        case(
            "port_chain_classifier_not_a_name_api",
            sfc_ext!("test_create_port_chain_nonuuid_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [nouuid]}")
            ),
            refuse("PortChain", "PC1", "spec.flowClassifiers[0]", "does not exist"),
        ),
        case(
            "port_chain_empty_classifiers",
            sfc_db!("test_create_port_chain_with_empty_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: []}")
            ),
            Accept,
        ),
        // flow_classifiers None: the field left out.
        case(
            "port_chain_classifiers_left_out",
            sfc_db!("test_create_port_chain_with_none_flow_classifiers"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            Accept,
        ),
        case(
            "port_chain_empty_chain_parameters",
            sfc_db!("test_create_port_chain_with_empty_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {}}")
            ),
            Accept,
        ),
        case(
            "port_chain_empty_chain_parameters_api",
            sfc_ext!("test_create_port_chain_empty_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {}}")
            ),
            Accept,
        ),
        // DIFFERS: networking-sfc's default correlation is mpls; ours is none (the only one).
        // The peer's defaults spelled out become ours spelled out.
        case(
            "port_chain_default_chain_parameters",
            sfc_db!("test_create_port_chain_with_default_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: false, correlation: none}}")
            ),
            Accept,
        ),
        // DIFFERS: correlation mpls and nsh (accepted there) are refused: SFs receive plain
        // packets, and between nodes hop identity travels in Geneve whatever this says.
        case(
            "port_chain_correlation_mpls",
            sfc_db!("test_create_port_chain_all_fields"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [], chainParameters: {symmetric: false, correlation: mpls}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        case(
            "port_chain_correlation_mpls_api",
            sfc_ext!("test_create_port_chain_all_fields"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: false, correlation: mpls}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        case(
            "port_chain_correlation_mpls_symmetric",
            sfc_ext!("test_create_port_chain_multiple_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {correlation: mpls, symmetric: true}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        case(
            "port_chain_correlation_nsh",
            sfc_db!("test_create_port_chain_with_nsh_correlation"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: false, correlation: nsh}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        // Refused there because the groups' pairs disagree on the correlation; here nsh alone
        // is refused.
        case(
            "port_chain_correlation_nsh_mixed_groups",
            sfc_db!("test_create_port_chain_with_nsh_correlation_incompatible_ppg_fail"),
            concat!(
                yaml!(
                    PortPair "PP1" "{ingress: sf-port1, egress: sf-port1}"
                    PortPair "PP2" "{ingress: sf-port2, egress: sf-port2}"
                    PortPairGroup "PG1" "{portPairs: [PP1]}"
                    PortPairGroup "PG2" "{portPairs: [PP2]}"
                    PortChain "PC1" "{portPairGroups: [PG1, PG2], chainParameters: {symmetric: false, correlation: nsh}}"
                )
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        case(
            "port_chain_correlation_unknown",
            sfc_db!("test_create_port_chain_with_invalid_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {correlation: unknown}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "unknown"),
        ),
        case(
            "port_chain_correlation_unknown_api",
            sfc_ext!("test_create_port_chain_invalid_chain_parameters_correlation"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: false, correlation: def}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "def"),
        ),
        case(
            "port_chain_symmetric_not_a_bool",
            sfc_db!("test_create_port_chain_with_invalid_chain_parameters_symmetric"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: abc}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.symmetric", "abc"),
        ),
        case(
            "port_chain_unknown_chain_parameter",
            sfc_ext!("test_create_port_chain_invalid_chain_parameters"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {abc: def}}")
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.abc", "unknown field"),
        ),
        case(
            "port_chain_symmetric_without_classifiers",
            sfc_db!("test_create_port_chain_all_fields_with_symmetric"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [], chainParameters: {symmetric: true}}")
            ),
            Accept,
        ),
        case(
            "port_chain_symmetric_without_classifiers_ovs",
            sfc_ovs!("test_create_port_chain_with_symmetric"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: true}}")
            ),
            Accept,
        ),
        // The peer's chain also says correlation mpls, refused here (see above); its point is
        // the chain id.
        case(
            "port_chain_with_chain_id",
            sfc_db!("test_create_port_chain_all_fields_with_chain_id"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [], chainId: 99}")
            ),
            Accept,
        ),
        case(
            "port_chain_chain_id_65535",
            sfc_db!("test_create_port_chain_all_fields_with_chain_id"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainId: 65535}")
            ),
            Accept,
        ),
        // networking-sfc validates chain_id with type:range (0, 65535).
        case(
            "port_chain_chain_id_65536",
            sfc_db!("test_create_port_chain_all_fields_with_chain_id"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainId: 65536}")
            ),
            refuse("PortChain", "PC1", "spec.chainId", "is out of range"),
        ),
        // DIFFERS: chain_id 0 means "assign one" there; here the field is left out for that,
        // and 0 is out of range.
        case(
            "port_chain_chain_id_0",
            sfc_db!("test_create_port_chain_all_fields_with_chain_id"),
            concat!(
                sf!("1"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainId: 0}")
            ),
            refuse("PortChain", "PC1", "spec.chainId", "is out of range"),
        ),
        update(
            "port_chains_same_chain_id",
            sfc_db!("test_create_port_chains_with_conflicting_chain_ids"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainId: 88}")
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], chainId: 88}"),
            refuse("PortChain", "PC2", "spec.chainId", "88 is already the id of PortChain \"PC1\""),
        ),
        case(
            "port_chain_consecutive_taps",
            sfc_db!("test_create_port_chain_with_consecutive_tap_port_pair_groups"),
            yaml!(
                PortPair "PP1" "{ingress: tap-dev1, egress: tap-dev1}"
                PortPair "PP2" "{ingress: tap-dev2, egress: tap-dev2}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
                PortPairGroup "PG2" "{portPairs: [PP2], tapEnabled: true}"
                PortChain "PC1" "{portPairGroups: [PG1, PG2]}"
            ),
            refuse("PortChain", "PC1", "spec.portPairGroups", "two tap groups are consecutive"),
        ),
        case(
            "port_chain_taps_apart",
            sfc_db!("test_create_port_chain_with_non_consecutive_tap_port_pair_groups"),
            yaml!(
                PortPair "PP1" "{ingress: tap-dev1, egress: tap-dev1}"
                PortPair "PP2" "{ingress: sf-dflt-in, egress: sf-dflt-out}"
                PortPair "PP3" "{ingress: tap-dev2, egress: tap-dev2}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true, lbFields: []}"
                PortPairGroup "PG2" "{portPairs: [PP2], tapEnabled: false, lbFields: []}"
                PortPairGroup "PG3" "{portPairs: [PP3], tapEnabled: true, lbFields: []}"
                PortChain "PC1" "{portPairGroups: [PG1, PG2, PG3]}"
            ),
            Accept,
        ),
        case(
            "port_chain_tap_only",
            sfc_ovs!("test_create_port_chain_with_tap_enabled_ppg_only"),
            yaml!(
                PortPair "PP1" "{ingress: tap-ids, egress: tap-ids}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
                FlowClassifier "FC1" "{ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-vm1}"
                PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
            ),
            Accept,
        ),
        case(
            "port_chain_default_then_tap",
            sfc_ovs!("test_create_port_chain_with_default_and_tap_enabled_ppg"),
            yaml!(
                PortPair "PP1" "{ingress: sf1-in, egress: sf1-out}"
                PortPair "PP2" "{ingress: tap-ids, egress: tap-ids}"
                PortPairGroup "PG1" "{portPairs: [PP1]}"
                PortPairGroup "PG2" "{portPairs: [PP2], tapEnabled: true}"
                FlowClassifier "FC1" "{ethertype: IPv4, protocol: tcp, destinationPortRange: '300:400', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-vm1}"
                PortChain "PC1" "{portPairGroups: [PG1, PG2], flowClassifiers: [FC1]}"
            ),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // PortChain and its classifiers
        case(
            "port_chain_with_classifier",
            sfc_db!("test_create_port_chain_with_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            Accept,
        ),
        case(
            "port_chain_with_two_classifiers",
            sfc_db!("test_create_port_chain_with_multi_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            Accept,
        ),
        // The same match at two source ports, in one chain.
        case(
            "port_chain_same_match_at_two_ports",
            sfc_db!("test_create_port_chain_with_flow_classifiers_basic_the_same"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            Accept,
        ),
        case(
            "port_chain_match_all_at_two_ports",
            sfc_ovs!("test_create_port_chain_with_multi_flow_classifiers_port_pairs"),
            concat!(
                yaml!(
                    PortPair "PP1" "{ingress: sf-ingress, egress: sf-egress}"
                    PortPairGroup "PG1" "{portPairs: [PP1]}"
                    FlowClassifier "FC1" "{logicalSourcePort: tap-port1}"
                    FlowClassifier "FC2" "{logicalSourcePort: tap-port3}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            Accept,
        ),
        case(
            "two_chains_disjoint_classifiers_at_one_port",
            sfc_db!("test_create_multi_port_chain_with_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            Accept,
        ),
        // DIFFERS: networking-sfc refuses overlapping classifiers of different chains whatever
        // their ports (sfc_db._validate_flow_classifiers uses the basic conflict, without
        // logical ports). Ours: classifiers at different source ports never meet, so they
        // may match the same packets (the classifier's logicalSourcePort is required here,
        // while networking-sfc's may be left out).
        update(
            "two_chains_same_match_at_two_ports",
            sfc_db!("test_create_multi_port_chain_with_conflict_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"),
            Accept,
        ),
        // The peer's case at one source port: refused by both.
        update(
            "two_chains_same_match_at_one_port",
            sfc_db!("test_create_multi_port_chain_with_conflict_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"),
            refuse("PortChain", "PC2", "spec.flowClassifiers[0]", "both entering at \"tap-vm1\""),
        ),
        // At one source port, whatever the destination ports (networking-sfc's chain-level
        // check ignores logical ports altogether).
        case(
            "two_chains_same_match_at_one_port_other_destinations",
            sfc_db!("test_create_multi_port_chain_with_conflict_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1, logicalDestinationPort: tap-vm3}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1, logicalDestinationPort: tap-vm4}"
                    PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"
                )
            ),
            refuse("FlowClassifier", "FC2", "spec", "whatever their logicalDestinationPort"),
        ),
        // DIFFERS as above (networking-sfc refuses; different source ports here), with the
        // group shared as in test_create_port_chain_shared_port_pair_groups.
        case(
            "two_chains_sharing_a_group_same_match_at_two_ports",
            sfc_db!("test_create_port_chain_shared_port_pair_groups"),
            concat!(
                sf!("1"),
                sf!("2"),
                sf!("3"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2}"
                    PortChain "PC1" "{portPairGroups: [PG1, PG2], flowClassifiers: [FC1]}"
                    PortChain "PC2" "{portPairGroups: [PG1, PG3], flowClassifiers: [FC2]}"
                )
            ),
            Accept,
        ),
        update(
            "classifier_in_two_chains",
            sfc_db!("test_create_multi_port_chain_with_same_flow_classifier"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC1]}"),
            refuse("PortChain", "PC2", "spec.flowClassifiers[0]", "is already in PortChain \"PC1\" (already applied)"),
        ),
        update(
            "update_chain_add_classifier",
            sfc_db!("test_update_port_chain_add_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"),
            Accept,
        ),
        update(
            "update_chain_remove_classifier",
            sfc_db!("test_update_port_chain_remove_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"),
            Accept,
        ),
        update(
            "update_chain_replace_classifier",
            sfc_db!("test_update_port_chain_replace_flow_classifiers"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC2]}"),
            Accept,
        ),
        update(
            "update_chain_replace_classifier_same_match_other_port",
            sfc_db!("test_update_port_chain_flow_classifiers_basic_the_same"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                )
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC2]}"),
            Accept,
        ),
        // DIFFERS: FC3 matches what FC1 (chain PC1) matches, but enters at another port:
        // refused there, accepted here.
        update(
            "update_chain_classifier_overlapping_another_chain_at_another_port",
            sfc_db!("test_update_port_chain_conflict_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC3" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                    PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"
                )
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC3]}"),
            Accept,
        ),
        // The peer's case with FC3 at FC1's port: refused by both, on the chain being applied.
        update(
            "update_chain_classifier_overlapping_another_chain_at_its_port",
            sfc_db!("test_update_port_chain_conflict_flow_classifiers"),
            concat!(
                sf!("1"),
                sf!("2"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.101.0/24, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC3" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1]}"
                    PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC2]}"
                )
            ),
            yaml!(PortChain "PC2" "{portPairGroups: [PG2], flowClassifiers: [FC3]}"),
            refuse("PortChain", "PC2", "spec.flowClassifiers[0]", "FlowClassifier \"FC1\" (already applied) of PortChain \"PC1\""),
        ),
        update(
            "update_chain_add_group",
            sfc_db!("test_update_port_chain_add_port_pair_groups"),
            concat!(sf!("1"), sf!("2"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1, PG2]}"),
            Accept,
        ),
        update(
            "update_chain_remove_group",
            sfc_db!("test_update_port_chain_remove_port_pair_groups"),
            concat!(sf!("1"), sf!("2"), yaml!(PortChain "PC1" "{portPairGroups: [PG1, PG2]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1]}"),
            Accept,
        ),
        update(
            "update_chain_replace_group",
            sfc_db!("test_update_port_chain_replace_port_pair_groups"),
            concat!(sf!("1"), sf!("2"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG2]}"),
            Accept,
        ),
        update(
            "update_chain_unchanged",
            sfc_plugin!("test_update_port_chain_driver_manager_called"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1]}"),
            Accept,
        ),
        // Refused there because chain_parameters cannot be updated; refused here because mpls
        // is.
        update(
            "update_chain_correlation_mpls",
            sfc_db!("test_update_port_chain_chain_parameters"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {correlation: mpls}}"),
            refuse("PortChain", "PC1", "spec.chainParameters.correlation", "only none is supported"),
        ),
        // DIFFERS: chain_parameters cannot be updated there (400); an apply replaces the chain
        // here, parameters included.
        update(
            "update_chain_parameters",
            sfc_ext!("test_port_chain_update_chain_parameters"),
            concat!(sf!("1"), yaml!(PortChain "PC1" "{portPairGroups: [PG1]}")),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1], chainParameters: {symmetric: true}}"),
            Accept,
        ),
        update(
            "update_chain_to_consecutive_taps",
            sfc_db!("test_update_port_chain_consistency_with_consecutive_tap_ppg"),
            yaml!(
                PortPair "PP1" "{ingress: tap-dev1, egress: tap-dev1}"
                PortPair "PP2" "{ingress: tap-dev2, egress: tap-dev2}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
                PortPairGroup "PG2" "{portPairs: [PP2], tapEnabled: true}"
                PortChain "PC1" "{portPairGroups: [PG1]}"
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1, PG2]}"),
            refuse("PortChain", "PC1", "spec.portPairGroups", "two tap groups are consecutive"),
        ),
        update(
            "update_chain_tap_then_normal",
            sfc_db!("test_update_tap_port_chain_consistency"),
            yaml!(
                PortPair "PP1" "{ingress: tap-dev1, egress: tap-dev1}"
                PortPair "PP2" "{ingress: sf-dev2, egress: sf-dev2}"
                PortPairGroup "PG1" "{portPairs: [PP1], tapEnabled: true}"
                PortPairGroup "PG2" "{portPairs: [PP2], tapEnabled: false}"
                PortChain "PC1" "{portPairGroups: [PG1]}"
            ),
            yaml!(PortChain "PC1" "{portPairGroups: [PG1, PG2]}"),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // Symmetric chains (OVS driver tests)
        case(
            "symmetric_chain_without_logical_destination_port",
            sfc_ovs!("test_create_port_chain_precommit_symmetric_no_logical_dst_port"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-src}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1], chainParameters: {symmetric: true}}"
                )
            ),
            refuse("PortChain", "PC1", "spec.chainParameters.symmetric", "has no logicalDestinationPort"),
        ),
        case(
            "symmetric_chain_classifier_applied_later_without_destination",
            sfc_ovs!("test_create_port_chain_precommit_symmetric_no_logical_dst_port"),
            concat!(
                sf!("1"),
                yaml!(
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1], chainParameters: {symmetric: true}}"
                    FlowClassifier "FC1" "{protocol: tcp, sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-src}"
                )
            ),
            refuse("FlowClassifier", "FC1", "spec.logicalDestinationPort", "is missing"),
        ),
        case(
            "symmetric_chain_with_port_ranges",
            sfc_ovs!("test_create_port_chain_with_flow_classifiers_with_symmetric"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-src, logicalDestinationPort: tap-dst}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1], chainParameters: {symmetric: true}}"
                )
            ),
            Accept,
        ),
        case(
            "symmetric_chain_with_port_pair",
            sfc_ovs!("test_create_port_chain_with_fcs_port_pairs_with_symmetric"),
            yaml!(
                PortPair "PP1" "{ingress: sf-ingress, egress: sf-egress}"
                PortPairGroup "PG1" "{portPairs: [PP1]}"
                FlowClassifier "FC1" "{ethertype: IPv4, protocol: tcp, sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16, logicalSourcePort: tap-src, logicalDestinationPort: tap-dst}"
                PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1], chainParameters: {symmetric: true}}"
            ),
            Accept,
        ),
        // Two match-all classifiers of one symmetric chain, each from its own source to its
        // own destination: created there; our contract rules nothing of it out.
        case(
            "symmetric_chain_two_classifiers_two_ports_each",
            sfc_ovs!("test_create_port_chain_with_multi_fcs_port_pairs_with_symmetric"),
            yaml!(
                PortPair "PP1" "{ingress: sf-ingress, egress: sf-egress}"
                PortPairGroup "PG1" "{portPairs: [PP1]}"
                FlowClassifier "FC1" "{logicalSourcePort: tap-src1, logicalDestinationPort: tap-dst1}"
                FlowClassifier "FC2" "{logicalSourcePort: tap-src2, logicalDestinationPort: tap-dst2}"
                PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2], chainParameters: {symmetric: true}}"
            ),
            Accept,
        ),
        // The same without symmetry: networking-sfc checks classifiers of one chain against
        // each other only when they are created, and at different source ports they do not
        // conflict (FlowClassifierDbPlugin._logical_port_conflict).
        case(
            "one_chain_two_classifiers_two_ports_each",
            sfc_db!("test_create_port_chain_with_flow_classifiers_basic_the_same"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1, logicalDestinationPort: tap-vm3}"
                    FlowClassifier "FC2" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm2, logicalDestinationPort: tap-vm4}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // FlowClassifier: its own fields
        case(
            "classifier",
            fc_db!("test_create_flow_classifier"),
            classifier!(""),
            Accept,
        ),
        case(
            "classifier_with_logical_destination_port",
            fc_db!("test_create_flow_classifier_with_logical_destination_port"),
            classifier!("logicalDestinationPort: tap-vm2"),
            Accept,
        ),
        case(
            "classifier_without_logical_destination_port",
            fc_db!("test_create_flow_classifier_with_port_id"),
            classifier!("sourceIpPrefix: 192.168.100.0/24"),
            Accept,
        ),
        // A classifier's logicalSourcePort is required here; networking-sfc's API lets it be
        // left out, and its OVS driver refuses such a classifier.
        case(
            "classifier_without_logical_source_port",
            fc_ovs!("test_create_flow_classifier_precommit_no_logical_source_port"),
            yaml!(FlowClassifier "FC1" "{}"),
            refuse("FlowClassifier", "FC1", "spec", "missing field `logicalSourcePort`"),
        ),
        case(
            "classifier_with_logical_source_port_ovs",
            fc_ovs!("test_create_flow_classifier_precommit"),
            classifier!(""),
            Accept,
        ),
        // A port id that is no UUID: a logical port that can be no interface name.
        case(
            "classifier_source_port_not_an_interface_name",
            fc_db!("test_create_flow_classifier_with_nouuid_port_id"),
            yaml!(FlowClassifier "FC1" "{logicalSourcePort: 'a/b'}"),
            refuse("FlowClassifier", "FC1", "spec.logicalSourcePort", "is not an interface name"),
        ),
        case(
            "classifier_destination_port_not_an_interface_name",
            fc_db!("test_create_flow_classifier_with_nouuid_port_id"),
            classifier!("logicalDestinationPort: 'tap vm2'"),
            refuse("FlowClassifier", "FC1", "spec.logicalDestinationPort", "is not an interface name"),
        ),
        case(
            "classifier_source_port_not_an_interface_name_api",
            fc_ext!("test_create_flow_classifier_port_id_nouuid"),
            yaml!(FlowClassifier "FC1" "{logicalSourcePort: tap-vm1-much-too-long}"),
            refuse("FlowClassifier", "FC1", "spec.logicalSourcePort", "is not an interface name"),
        ),
        // DIFFERS: a port that does not exist is a 404 there; an absent interface is accepted
        // offline here.
        case(
            "classifier_absent_logical_ports",
            fc_db!("test_create_flow_classifier_with_unknown_port_id"),
            yaml!(FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-gone1, logicalDestinationPort: tap-gone2}"),
            Accept,
        ),
        case(
            "classifier_all_fields",
            fc_db!("test_create_flow_classifier_with_all_fields"),
            classifier!("ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '101:201', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16"),
            Accept,
        ),
        // The same classifier steered by a chain: any combination of source and destination
        // port ranges is accepted.
        case(
            "chained_classifier_all_fields",
            fc_db!("test_create_flow_classifier_with_all_fields"),
            chained_classifier!("ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '101:201', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16"),
            Accept,
        ),
        case(
            "chained_classifier_both_port_ranges",
            sfc_ovs!("test_create_port_chain_with_flow_classifiers"),
            chained_classifier!("ethertype: IPv4, protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16"),
            Accept,
        ),
        case(
            "chained_classifier_both_port_ranges_with_pair",
            sfc_ovs!("test_create_port_chain_with_flow_classifiers_port_pairs"),
            chained_classifier!("protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400', sourceIpPrefix: 10.100.0.0/16, destinationIpPrefix: 10.200.0.0/16"),
            Accept,
        ),
        case(
            "chained_classifier_same_port_ranges_both_sides_udp",
            fc_db!("test_create_flow_classifier_with_all_supported_port_protocol"),
            chained_classifier!("protocol: udp, sourcePortRange: '100:200', destinationPortRange: '100:200'"),
            Accept,
        ),
        case(
            "ethertypes",
            fc_db!("test_create_flow_classifier_with_all_supported_ethertype"),
            yaml!(
                FlowClassifier "FC1" "{logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{ethertype: IPv4, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{ethertype: IPv6, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "ethertypes_api",
            fc_ext!("test_create_flow_classifier_ethertype"),
            yaml!(
                FlowClassifier "FC2" "{ethertype: IPv4, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{ethertype: IPv6, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "ethertype_unknown",
            fc_db!("test_create_flow_classifier_with_invalid_ethertype"),
            classifier!("ethertype: unsupported"),
            refuse("FlowClassifier", "FC1", "spec.ethertype", "unsupported"),
        ),
        case(
            "ethertype_unknown_api",
            fc_ext!("test_create_flow_classifier_invalid_ethertype"),
            classifier!("ethertype: unknown"),
            refuse("FlowClassifier", "FC1", "spec.ethertype", "unknown"),
        ),
        case(
            "protocols",
            fc_db!("test_create_flow_classifier_with_all_supported_protocol"),
            yaml!(
                FlowClassifier "FC1" "{logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{protocol: tcp, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{protocol: udp, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC4" "{protocol: icmp, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "protocols_api",
            fc_ext!("test_create_flow_classifier_protocol"),
            yaml!(
                FlowClassifier "FC2" "{protocol: tcp, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{protocol: udp, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC4" "{protocol: icmp, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "protocol_unknown",
            fc_db!("test_create_flow_classifier_with_invalid_protocol"),
            classifier!("protocol: unsupported"),
            refuse("FlowClassifier", "FC1", "spec.protocol", "unknown protocol \"unsupported\""),
        ),
        case(
            "protocol_unknown_api",
            fc_ext!("test_create_flow_classifier_invalid_protocol"),
            classifier!("protocol: unknown"),
            refuse("FlowClassifier", "FC1", "spec.protocol", "unknown protocol \"unknown\""),
        ),
        case(
            "port_ranges",
            fc_db!("test_create_flow_classifier_with_all_supported_port_protocol"),
            yaml!(
                FlowClassifier "FC1" "{protocol: tcp, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '100:200', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{protocol: tcp, sourcePortRange: '100:100', destinationPortRange: '100', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC4" "{protocol: udp, sourcePortRange: '100:200', destinationPortRange: '100:200', logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        // The API's ranges given as numbers or strings: "N", "MIN:MAX", or a bare number.
        case(
            "source_port_range_forms",
            fc_ext!("test_create_flow_classifier_source_port_range"),
            yaml!(
                FlowClassifier "FC1" "{protocol: tcp, sourcePortRange: 100, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{protocol: tcp, sourcePortRange: '100', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{protocol: tcp, sourcePortRange: '100:200', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC4" "{protocol: tcp, sourcePortRange: '1:200', logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "destination_port_range_forms",
            fc_ext!("test_create_flow_classifier_destination_port_range"),
            yaml!(
                FlowClassifier "FC1" "{protocol: udp, destinationPortRange: 200, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{protocol: udp, destinationPortRange: '200', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC3" "{protocol: udp, destinationPortRange: '100:200', logicalSourcePort: tap-vm1}"
                FlowClassifier "FC4" "{protocol: udp, destinationPortRange: '100:65535', logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "source_port_not_a_number",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: abc"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"abc\" is not a port"),
        ),
        case(
            "source_port_max_not_a_number",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: '1:abc'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"abc\" is not a port"),
        ),
        case(
            "source_port_range_min_above_max",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: '100:99'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "min > max; write it as \"99:100\""),
        ),
        case(
            "source_port_65536",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: 65536"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"65536\" is not a port"),
        ),
        case(
            "source_port_max_65536",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: '1:65536'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"65536\" is not a port"),
        ),
        case(
            "source_port_negative",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, sourcePortRange: -1"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"-1\" is not a port"),
        ),
        case(
            "source_port_negative_api",
            fc_ext!("test_create_flow_classifier_port_small"),
            classifier!("protocol: tcp, sourcePortRange: '-1'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "is not a port"),
        ),
        case(
            "source_port_65536_api",
            fc_ext!("test_create_flow_classifier_port_large"),
            classifier!("protocol: tcp, sourcePortRange: '65536'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"65536\" is not a port"),
        ),
        // DIFFERS: networking-sfc takes port 0 (normalize_port_value allows 0..65535); ports
        // are 1..65535 here.
        case(
            "source_port_0",
            fc_ext!("test_create_flow_classifier_port_small"),
            classifier!("protocol: tcp, sourcePortRange: '0:100'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "\"0\" is not a port"),
        ),
        case(
            "destination_port_not_a_number",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, destinationPortRange: abc"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "\"abc\" is not a port"),
        ),
        case(
            "destination_port_range_min_above_max",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, destinationPortRange: '100:99'"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "min > max; write it as \"99:100\""),
        ),
        case(
            "destination_port_65536",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, destinationPortRange: '100:65536'"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "\"65536\" is not a port"),
        ),
        case(
            "destination_port_negative",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: tcp, destinationPortRange: '-1:100'"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "is not a port"),
        ),
        case(
            "source_port_range_without_protocol",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("sourcePortRange: '100:200'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "need protocol tcp or udp"),
        ),
        case(
            "source_port_without_protocol",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("sourcePortRange: '100'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "need protocol tcp or udp"),
        ),
        case(
            "source_port_range_with_icmp",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: icmp, sourcePortRange: '100:200'"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "need protocol tcp or udp"),
        ),
        case(
            "destination_port_range_without_protocol",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("destinationPortRange: '100:200'"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "need protocol tcp or udp"),
        ),
        case(
            "destination_port_range_with_icmp",
            fc_db!("test_create_flow_classifier_with_invalid_port_protocol"),
            classifier!("protocol: icmp, destinationPortRange: '100:200'"),
            refuse("FlowClassifier", "FC1", "spec.destinationPortRange", "need protocol tcp or udp"),
        ),
        // Accepted by the API layer (the plugin is mocked there), refused by the DB plugin
        // (FlowClassifierProtocolRequiredWithPorts), as here.
        case(
            "port_ranges_without_protocol_api",
            fc_ext!("test_create_flow_classifier_all_fields"),
            classifier!("sourcePortRange: '100:200', destinationPortRange: '100:200', sourceIpPrefix: 10.0.0.0/8, destinationIpPrefix: 10.0.0.0/8, logicalDestinationPort: tap-vm2"),
            refuse("FlowClassifier", "FC1", "spec.sourcePortRange", "need protocol tcp or udp"),
        ),
        case(
            "ip_prefixes",
            fc_db!("test_create_flow_classifier_with_all_supported_ip_prefix"),
            yaml!(
                FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{destinationIpPrefix: 192.168.100.0/24, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        // Prefixes with host bits set, which networking-sfc's validator (type:subnet_or_none)
        // takes as they are.
        case(
            "ip_prefixes_with_host_bits",
            fc_db!("test_create_flow_classifier_with_all_supported_ip_prefix"),
            yaml!(
                FlowClassifier "FC1" "{sourceIpPrefix: 192.168.100.1/24, logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{destinationIpPrefix: 192.168.100.1/24, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "ip_prefixes_api",
            fc_ext!("test_create_flow_classifier_source_ip_prefix"),
            classifier!("sourceIpPrefix: 10.0.0.0/8"),
            Accept,
        ),
        case(
            "destination_ip_prefix_api",
            fc_ext!("test_create_flow_classifier_destination_ip_prefix"),
            classifier!("destinationIpPrefix: 10.0.0.0/8"),
            Accept,
        ),
        case(
            "ipv4_prefix_with_ipv6",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix_ethertype"),
            classifier!("ethertype: IPv6, sourceIpPrefix: 192.168.100.0/24"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "spec.ethertype is IPv6"),
        ),
        case(
            "ipv6_prefix_with_ipv4",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix_ethertype"),
            classifier!("ethertype: IPv4, sourceIpPrefix: 'ff::0/24'"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "spec.ethertype is IPv4"),
        ),
        case(
            "ipv6_destination_prefix_with_ipv4_by_default",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix_ethertype"),
            classifier!("destinationIpPrefix: 'fd00::/64'"),
            refuse("FlowClassifier", "FC1", "spec.destinationIpPrefix", "spec.ethertype is IPv4"),
        ),
        case(
            "ipv6_prefixes_with_ipv6",
            fc_db!("test_create_flow_classifier_with_all_supported_ethertype"),
            classifier!("ethertype: IPv6, sourceIpPrefix: 'fd00:1::/64', destinationIpPrefix: 'fd00:2::/64'"),
            Accept,
        ),
        case(
            "source_prefix_length_34",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("sourceIpPrefix: 10.0.0.0/34"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "prefix length must be 0..32"),
        ),
        case(
            "source_prefix_five_bytes",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("sourceIpPrefix: 10.0.0.0.0/8"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "is not a CIDR prefix"),
        ),
        case(
            "source_prefix_byte_256",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("sourceIpPrefix: 256.0.0.0/8"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "is not a CIDR prefix"),
        ),
        // A prefix needs its length (neutron-lib's subnet validator refuses it too); the error
        // shows the fix.
        case(
            "source_prefix_without_length",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("sourceIpPrefix: 10.0.0.0"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "has no prefix length; write it with one, e.g. 10.0.0.0/32"),
        ),
        case(
            "destination_prefix_length_34",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("destinationIpPrefix: 10.0.0.0/34"),
            refuse("FlowClassifier", "FC1", "spec.destinationIpPrefix", "prefix length must be 0..32"),
        ),
        case(
            "destination_prefix_five_bytes",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("destinationIpPrefix: 10.0.0.0.0/8"),
            refuse("FlowClassifier", "FC1", "spec.destinationIpPrefix", "is not a CIDR prefix"),
        ),
        case(
            "destination_prefix_byte_256",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("destinationIpPrefix: 256.0.0.0/8"),
            refuse("FlowClassifier", "FC1", "spec.destinationIpPrefix", "is not a CIDR prefix"),
        ),
        case(
            "destination_prefix_without_length",
            fc_db!("test_create_flow_classifier_with_invalid_ip_prefix"),
            classifier!("destinationIpPrefix: 10.0.0.0"),
            refuse("FlowClassifier", "FC1", "spec.destinationIpPrefix", "has no prefix length; write it with one, e.g. 10.0.0.0/32"),
        ),
        case(
            "source_prefix_without_length_api",
            fc_ext!("test_create_flow_classifier_ip_prefix_no_cidr"),
            classifier!("sourceIpPrefix: 10.0.0.0"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "e.g. 10.0.0.0/32"),
        ),
        case(
            "source_prefix_length_33_api",
            fc_ext!("test_create_flow_classifier_ip_prefix_invalid_cidr"),
            classifier!("sourceIpPrefix: 10.0.0.0/33"),
            refuse("FlowClassifier", "FC1", "spec.sourceIpPrefix", "prefix length must be 0..32"),
        ),
        // DIFFERS: l7_parameters has no counterpart (no L7 classification): unknown field,
        // even empty.
        case(
            "l7_parameters_are_no_field",
            fc_db!("test_create_flow_classifier_with_invalid_l7_parameters"),
            classifier!("l7Parameters: {abc: def}"),
            refuse("FlowClassifier", "FC1", "spec.l7Parameters", "unknown field"),
        ),
        case(
            "empty_l7_parameters_are_no_field",
            fc_db!("test_create_flow_classifier_with_all_supported_l7_parameters"),
            classifier!("l7Parameters: {}"),
            refuse("FlowClassifier", "FC1", "spec.l7Parameters", "unknown field"),
        ),
        case(
            "l7_parameters_are_no_field_api",
            fc_ext!("test_create_flow_classifier_invalid_l7_parameters"),
            classifier!("l7Parameters: {abc: def}"),
            refuse("FlowClassifier", "FC1", "spec.l7Parameters", "unknown field"),
        ),
        // DIFFERS: a classifier's match fields cannot be updated there (400); an apply
        // replaces the classifier here.
        update(
            "update_classifier_fields",
            fc_db!("test_update_flow_classifer_unsupported_fields"),
            classifier!("sourceIpPrefix: 192.168.100.0/24"),
            classifier!("protocol: tcp, destinationPortRange: '80', sourceIpPrefix: 192.168.100.0/24, destinationIpPrefix: 192.168.101.0/24"),
            Accept,
        ),
        update(
            "update_classifier_unchanged",
            fc_plugin!("test_update_flow_classifier_driver_manager_called"),
            classifier!(""),
            classifier!(""),
            Accept,
        ),
        // DIFFERS: networking-sfc refuses a classifier that overlaps another at the same
        // logical ports as soon as it is created; here only classifiers of different chains
        // may not overlap, so two identical classifiers outside chains, or in one chain, are
        // accepted.
        case(
            "identical_classifiers_in_no_chain",
            fc_db!("test_create_flow_classifier_ethertype_conflict"),
            yaml!(
                FlowClassifier "FC1" "{logicalSourcePort: tap-vm1}"
                FlowClassifier "FC2" "{ethertype: IPv4, logicalSourcePort: tap-vm1}"
            ),
            Accept,
        ),
        case(
            "identical_classifiers_in_one_chain",
            fc_db!("test_create_flow_classifier_protocol_conflict"),
            concat!(
                sf!("1"),
                yaml!(
                    FlowClassifier "FC1" "{protocol: tcp, logicalSourcePort: tap-vm1}"
                    FlowClassifier "FC2" "{protocol: tcp, logicalSourcePort: tap-vm1}"
                    PortChain "PC1" "{portPairGroups: [PG1], flowClassifiers: [FC1, FC2]}"
                )
            ),
            Accept,
        ),
        // ---------------------------------------------------------------------------------
        // FlowClassifier conflicts: two chains, one classifier each, at one source port.
        case(
            "conflict_ethertype_default_and_ipv4",
            fc_db!("test_create_flow_classifier_ethertype_conflict"),
            two_chains_at_one_port!("", "ethertype: IPv4"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_ethertype_ipv6_and_ipv6",
            fc_db!("test_create_flow_classifier_ethertype_conflict"),
            two_chains_at_one_port!("ethertype: IPv6", "ethertype: IPv6"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_ipv4_and_ipv6",
            fc_db!("test_create_flow_classifier_ethertype_conflict"),
            two_chains_at_one_port!("ethertype: IPv4", "ethertype: IPv6"),
            Accept,
        ),
        case(
            "conflict_protocol_any_and_tcp",
            fc_db!("test_create_flow_classifier_protocol_conflict"),
            two_chains_at_one_port!("", "protocol: tcp"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_protocol_tcp_and_any",
            fc_db!("test_create_flow_classifier_protocol_conflict"),
            two_chains_at_one_port!("protocol: tcp", ""),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_tcp_and_udp",
            fc_db!("test_create_flow_classifier_protocol_conflict"),
            two_chains_at_one_port!("protocol: tcp", "protocol: udp"),
            Accept,
        ),
        case(
            "conflict_source_prefix_inside",
            fc_db!("test_create_flow_classifier_source_ip_prefix_conflict"),
            two_chains_at_one_port!("sourceIpPrefix: 10.100.0.0/16", "sourceIpPrefix: 10.100.100.0/24"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_source_prefix_around",
            fc_db!("test_create_flow_classifier_source_ip_prefix_conflict"),
            two_chains_at_one_port!("sourceIpPrefix: 10.100.0.0/16", "sourceIpPrefix: 10.0.0.0/8"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_source_prefix_any",
            fc_db!("test_create_flow_classifier_source_ip_prefix_conflict"),
            two_chains_at_one_port!("", "sourceIpPrefix: 10.100.0.0/16"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_source_prefixes_apart",
            fc_db!("test_create_flow_classifier_source_ip_prefix_conflict"),
            two_chains_at_one_port!("sourceIpPrefix: 10.100.0.0/16", "sourceIpPrefix: 10.101.0.0/16"),
            Accept,
        ),
        case(
            "conflict_destination_prefix_same",
            fc_db!("test_create_flow_classifier_destination_ip_prefix_conflict"),
            two_chains_at_one_port!("destinationIpPrefix: 10.100.0.0/16", "destinationIpPrefix: 10.100.0.0/16"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_destination_prefix_inside",
            fc_db!("test_create_flow_classifier_destination_ip_prefix_conflict"),
            two_chains_at_one_port!("destinationIpPrefix: 10.100.0.0/16", "destinationIpPrefix: 10.100.100.0/24"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_destination_prefixes_apart",
            fc_db!("test_create_flow_classifier_destination_ip_prefix_conflict"),
            two_chains_at_one_port!("destinationIpPrefix: 10.100.0.0/16", "destinationIpPrefix: 10.101.0.0/16"),
            Accept,
        ),
        case(
            "conflict_source_ports_any_and_from_100",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp", "protocol: tcp, sourcePortRange: '100:65535'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_source_ports_from_100_and_from_101",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:65535'", "protocol: tcp, sourcePortRange: '101:65535'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_source_ports_from_100_and_up_to_99",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:65535'", "protocol: tcp, sourcePortRange: '1:99'"),
            Accept,
        ),
        case(
            "no_conflict_source_ports_up_to_100_and_from_101",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '1:100'", "protocol: tcp, sourcePortRange: '101:65535'"),
            Accept,
        ),
        case(
            "conflict_source_ports_around",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:200'", "protocol: tcp, sourcePortRange: '99:201'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_source_ports_inside",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:200'", "protocol: tcp, sourcePortRange: '101:199'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_source_ports_straddling",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:200'", "protocol: tcp, sourcePortRange: '101:201'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_source_ports_after",
            fc_db!("test_create_flow_classifier_source_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, sourcePortRange: '100:200'", "protocol: tcp, sourcePortRange: '201:300'"),
            Accept,
        ),
        case(
            "conflict_destination_ports_around",
            fc_db!("test_create_flow_classifier_destination_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, destinationPortRange: '100:200'", "protocol: tcp, destinationPortRange: '99:201'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "conflict_destination_ports_up_to_199",
            fc_db!("test_create_flow_classifier_destination_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, destinationPortRange: '100:200'", "protocol: tcp, destinationPortRange: '1:199'"),
            refuse("FlowClassifier", "FC2", "spec", "both entering at \"tap-vm1\""),
        ),
        case(
            "no_conflict_destination_ports_from_201",
            fc_db!("test_create_flow_classifier_destination_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, destinationPortRange: '100:200'", "protocol: tcp, destinationPortRange: '201:65535'"),
            Accept,
        ),
        case(
            "no_conflict_destination_ports_50_to_99",
            fc_db!("test_create_flow_classifier_destination_port_range_conflict"),
            two_chains_at_one_port!("protocol: tcp, destinationPortRange: '100:200'", "protocol: tcp, destinationPortRange: '50:99'"),
            Accept,
        ),
        case(
            "no_conflict_destination_prefix_differs",
            fc_db!("test_create_flow_classifier_not_all_fields_conflict"),
            two_chains_at_one_port!(
                "sourceIpPrefix: 192.168.100.0/24, destinationIpPrefix: 192.168.101.0/24",
                "sourceIpPrefix: 192.168.100.0/24, destinationIpPrefix: 192.168.102.0/24"
            ),
            Accept,
        ),
        case(
            "no_conflict_destination_ports_differ_with_both_ranges",
            fc_db!("test_create_flow_classifier_not_all_fields_conflict"),
            two_chains_at_one_port!(
                "protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '100:200'",
                "protocol: tcp, sourcePortRange: '100:200', destinationPortRange: '300:400'"
            ),
            Accept,
        ),
        case(
            "no_conflict_source_ports_differ_same_prefix",
            fc_db!("test_create_flow_classifier_not_all_fields_conflict"),
            two_chains_at_one_port!(
                "protocol: tcp, sourcePortRange: '100:200', sourceIpPrefix: 192.168.100.0/24",
                "protocol: tcp, sourcePortRange: '300:400', sourceIpPrefix: 192.168.100.0/24"
            ),
            Accept,
        ),
        case(
            "no_conflict_list_prefixes",
            fc_db!("test_list_flow_classifiers"),
            two_chains_at_one_port!("sourceIpPrefix: 10.100.0.0/16", "sourceIpPrefix: 10.101.0.0/16"),
            Accept,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running them.

/// The case's outcome against its expectation: `Err` says how it differs.
fn run(case: &Case) -> Result<(), String> {
    let interfaces = Interfaces::default();
    let state = if case.before.is_empty() {
        State::default()
    } else {
        plan(
            &State::default(),
            &[(APPLIED.into(), case.before.into())],
            &interfaces,
        )
        .map_err(|e| format!("the state to apply first was refused:\n{e}"))?
        .0
    };
    let result = plan(&state, &[(FILE.into(), case.yaml.into())], &interfaces);
    match (&case.expect, result) {
        (Accept, Ok(_)) => Ok(()),
        (Accept, Err(e)) => Err(format!("refused:\n{e}")),
        (Outcome::Refuse { .. }, Ok(_)) => Err("accepted".into()),
        (
            Outcome::Refuse {
                kind,
                name,
                field,
                words,
            },
            Err(e),
        ) => {
            let named = |x: &ConfigError| {
                x.file == FILE
                    && x.kind == *kind
                    && x.name == *name
                    && x.field == *field
                    && x.message.contains(words)
            };
            if e.0.iter().any(named) {
                Ok(())
            } else {
                Err(format!("refused, but not as expected:\n{e}"))
            }
        }
    }
}

#[test]
fn networking_sfc_cases_have_the_contracts_outcome() {
    let filter = std::env::var("PARITY_CASE").unwrap_or_default();
    let cases = cases();
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    let mut ran = 0;
    for case in cases.iter().filter(|c| c.name.contains(filter.as_str())) {
        ran += 1;
        if let Err(actual) = run(case) {
            summary.push(format!("  {}", case.name));
            failed.push(format!(
                "case {}\n  from {}\n  expected: {}\n  actual: {}\n  file:\n{}",
                case.name,
                case.peer,
                case.expect,
                actual.replace('\n', "\n    "),
                indent(case.before, case.yaml),
            ));
        }
    }
    assert!(ran > 0, "no case matches PARITY_CASE={filter:?}");
    assert!(
        failed.is_empty(),
        "{} of {ran} cases do not have the contract's outcome:\n{}\n\n{}",
        failed.len(),
        summary.join("\n"),
        failed.join("\n\n")
    );
}

/// The chain files of a failing case, as they read.
fn indent(before: &str, yaml: &str) -> String {
    let mut out = String::new();
    if !before.is_empty() {
        out.push_str(&format!("    # {APPLIED}, applied first\n"));
        for line in before.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        out.push_str(&format!("    # {FILE}\n"));
    }
    for line in yaml.lines() {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

/// Names are unique, every case cites a networking-sfc unit test as `file::Class::method`,
/// and the table is as broad as the translation it replaces.
#[test]
fn cases_are_named_and_cite_their_peer_test() {
    let cases = cases();
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "case {} appears twice", c.name);
        let parts: Vec<&str> = c.peer.split("::").collect();
        assert!(
            parts.len() == 3
                && parts[0].starts_with("networking_sfc/tests/unit/")
                && parts[0].ends_with(".py")
                && parts[1].ends_with("TestCase")
                && parts[2].starts_with("test_"),
            "case {}: {:?} is not file::Class::test_method",
            c.name,
            c.peer
        );
    }
    let refused = cases
        .iter()
        .filter(|c| matches!(c.expect, Outcome::Refuse { .. }))
        .count();
    assert!(cases.len() >= 100 && refused >= 40 && cases.len() - refused >= 40);
}
