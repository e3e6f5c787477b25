//! Every item appears exactly once across pages, for any `per_page` (clamped at 50).

mod common;

use std::collections::HashSet;

use common::{sim_with, Api};
use proptest::prelude::*;
use serde_json::Value;

fn walk(
    api: &Api,
    rt: &tokio::runtime::Runtime,
    path: &str,
    key: &str,
    field: &str,
    per_page: u64,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut page = 1;
    loop {
        let body: Value = rt.block_on(api.json(&format!("{path}?page={page}&per_page={per_page}")));
        let items = body[key].as_array().unwrap().clone();
        assert!(items.len() as u64 <= per_page.min(50), "clamped to 50");
        if items.is_empty() {
            break;
        }
        seen.extend(items.iter().map(|i| i[field].to_string()));
        page += 1;
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn executions_and_projects_each_exactly_once(per_page in 1u64..=60) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let h = rt.block_on(sim_with(|c| c.seed = "projects=57,pipelines=1,executions=123".parse().unwrap()));
        let api = Api::new(&h);
        let sim = h.sim();
        let project = sim.project_names("acme")[0].clone();
        let pid = sim.pipeline_ids("acme", &project)[0];
        let path = format!("/workspaces/acme/projects/{project}/pipelines/{pid}/executions");
        let ids = walk(&api, &rt, &path, "executions", "id", per_page);
        prop_assert_eq!(ids.len(), 123);
        prop_assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 123);
        let numeric: Vec<u64> = ids.iter().map(|s| s.parse().unwrap()).collect();
        prop_assert!(numeric.windows(2).all(|w| w[0] > w[1]), "newest first");
        let projects = walk(&api, &rt, "/workspaces/acme/projects", "projects", "name", per_page);
        prop_assert_eq!(projects.len(), 57);
        prop_assert_eq!(projects.iter().collect::<HashSet<_>>().len(), 57);
        rt.block_on(h.shutdown());
    }
}
