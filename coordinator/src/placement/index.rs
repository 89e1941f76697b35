//! The candidates of every item, indexed once per plan: alive, accepting members by item
//! group, then by region. Looking an item's candidates up is then proportional to the
//! candidates themselves, not to every member (a plan over I items and N members was
//! I × N filtering, with an allocation per item, before).

use std::collections::BTreeMap;

use super::{Item, Node};

/// The accepting members one item group may use, all and by region.
#[derive(Debug, Default)]
struct GroupNodes<'a> {
    all: Vec<&'a Node>,
    by_region: BTreeMap<&'a str, Vec<&'a Node>>,
}

/// Candidates by item group (`None`: items of any group) and region.
#[derive(Debug)]
pub(super) struct CandidateIndex<'a> {
    groups: BTreeMap<Option<&'a str>, GroupNodes<'a>>,
    /// For an item whose group was not indexed (not among the items it was built for).
    nodes: &'a [Node],
}

/// Whether a node of group `node` may take an item of group `item` (`None` on either side:
/// any).
fn group_matches(item: Option<&str>, node: Option<&str>) -> bool {
    match (item, node) {
        (Some(g), Some(ng)) => g == ng,
        _ => true,
    }
}

fn group_nodes<'a>(nodes: &'a [Node], group: Option<&str>) -> GroupNodes<'a> {
    let mut g = GroupNodes::default();
    for n in nodes
        .iter()
        .filter(|n| n.alive && n.accepting && group_matches(group, n.group.as_deref()))
    {
        g.all.push(n);
        g.by_region.entry(n.region.as_str()).or_default().push(n);
    }
    g
}

impl<'a> CandidateIndex<'a> {
    /// Indexes `nodes` for the groups of `items`.
    pub(super) fn new(nodes: &'a [Node], items: &'a [Item]) -> Self {
        let mut groups = BTreeMap::new();
        for it in items {
            let key = it.group.as_deref();
            groups.entry(key).or_insert_with(|| group_nodes(nodes, key));
        }
        Self { groups, nodes }
    }

    /// The candidates of `it`, minus `except`: accepting members of its group in its region
    /// when there is any, otherwise in any region.
    pub(super) fn candidates<'s>(
        &'s self,
        it: &'s Item,
        except: Option<&'s str>,
    ) -> Box<dyn Iterator<Item = &'a Node> + 's> {
        let not_except = move |n: &&&'a Node| Some(n.id.as_str()) != except;
        let Some(g) = self.groups.get(&it.group.as_deref()) else {
            // Not indexed (not among the items the index was built for): filter all nodes.
            let ok = move |n: &&'a Node| {
                n.alive
                    && n.accepting
                    && group_matches(it.group.as_deref(), n.group.as_deref())
                    && Some(n.id.as_str()) != except
            };
            let in_region = self.nodes.iter().any(|n| ok(&n) && n.region == it.region);
            return Box::new(
                self.nodes
                    .iter()
                    .filter(move |n| ok(n) && (!in_region || n.region == it.region)),
            );
        };
        let list: &'s [&'a Node] = match g.by_region.get(it.region.as_str()) {
            Some(r) if r.iter().any(|n| not_except(&n)) => r,
            _ => &g.all,
        };
        Box::new(list.iter().filter(not_except).copied())
    }

    /// Whether `id` is a candidate of `it`.
    pub(super) fn contains(&self, it: &Item, id: &str) -> bool {
        self.candidates(it, None).any(|n| n.id == id)
    }

    /// Whether `it` has a candidate in its own region, other than `except`.
    pub(super) fn any_in_region(&self, it: &Item, except: Option<&str>) -> bool {
        self.candidates(it, except).any(|n| n.region == it.region)
    }
}
