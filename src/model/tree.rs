//! The tenant tree (wazo-auth's model): who is above whom, answered without the store.

use std::collections::{HashMap, HashSet};

use super::Tenant;

/// Deepest tenant tree accepted: a walk up from any tenant ends within this many steps, even
/// over a parent chain damaged by hand.
pub const MAX_TENANT_DEPTH: usize = 32;

/// Parent links of every tenant, built from the tenant records.
#[derive(Debug, Clone, Default)]
pub struct TenantTree {
    parents: HashMap<String, Option<String>>,
    children: HashMap<String, Vec<String>>,
}

impl TenantTree {
    /// The tree of these tenants.
    pub fn new<'a>(tenants: impl IntoIterator<Item = &'a Tenant>) -> TenantTree {
        let mut tree = TenantTree::default();
        for t in tenants {
            tree.parents.insert(t.id.clone(), t.parent.clone());
            if let Some(parent) = &t.parent {
                tree.children
                    .entry(parent.clone())
                    .or_default()
                    .push(t.id.clone());
            }
        }
        for list in tree.children.values_mut() {
            list.sort();
        }
        tree
    }

    /// True when the tenant exists.
    pub fn contains(&self, id: &str) -> bool {
        self.parents.contains_key(id)
    }

    /// The parent of `id`, if it has one.
    pub fn parent(&self, id: &str) -> Option<&str> {
        self.parents.get(id).and_then(|p| p.as_deref())
    }

    /// `id`'s ancestors, nearest first (`id` excluded), at most [`MAX_TENANT_DEPTH`].
    pub fn ancestors(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut at = self.parent(id);
        while let Some(p) = at {
            if out.len() >= MAX_TENANT_DEPTH || p == id || out.iter().any(|seen| seen == p) {
                break;
            }
            out.push(p.to_owned());
            at = self.parent(p);
        }
        out
    }

    /// Number of tenants above `id`: 0 for the root.
    pub fn depth(&self, id: &str) -> usize {
        self.ancestors(id).len()
    }

    /// True when `id` is `root` or one of its descendants (a walk up, no allocation: every
    /// listed device of a subtree asks).
    pub fn within(&self, id: &str, root: &str) -> bool {
        if !self.contains(id) {
            return false;
        }
        let mut at = id;
        for _ in 0..=MAX_TENANT_DEPTH {
            if at == root {
                return true;
            }
            match self.parent(at) {
                Some(p) if p != id => at = p,
                _ => return false,
            }
        }
        false
    }

    /// The direct children of `id`, sorted.
    pub fn children(&self, id: &str) -> &[String] {
        self.children.get(id).map_or(&[], Vec::as_slice)
    }

    /// `root` and all its descendants (empty when `root` does not exist).
    pub fn subtree(&self, root: &str) -> HashSet<String> {
        let mut out = HashSet::new();
        if !self.contains(root) {
            return out;
        }
        let mut pending = vec![root.to_owned()];
        while let Some(id) = pending.pop() {
            if out.insert(id.clone()) {
                pending.extend(self.children(&id).iter().cloned());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> TenantTree {
        let t = |id: &str, parent: Option<&str>| Tenant::new(id, parent);
        TenantTree::new(&[
            t("root", None),
            t("a", Some("root")),
            t("a1", Some("a")),
            t("b", Some("root")),
            // A loop written by hand must not hang a walk.
            t("x", Some("y")),
            t("y", Some("x")),
        ])
    }

    #[test]
    fn ancestry_and_subtrees() {
        let tree = tree();
        assert_eq!(tree.ancestors("a1"), ["a", "root"]);
        assert_eq!(tree.depth("root"), 0);
        assert!(tree.within("a1", "root"));
        assert!(tree.within("a1", "a"));
        assert!(tree.within("a", "a"));
        assert!(!tree.within("a", "a1"));
        assert!(!tree.within("b", "a"));
        assert!(!tree.within("nobody", "nobody"));
        assert_eq!(tree.children("root"), ["a", "b"]);
        let mut sub: Vec<_> = tree.subtree("a").into_iter().collect();
        sub.sort();
        assert_eq!(sub, ["a", "a1"]);
        assert!(tree.subtree("nobody").is_empty());
        assert_eq!(tree.ancestors("x"), ["y"]);
        assert!(!tree.within("x", "root"));
    }
}
