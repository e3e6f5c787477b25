"""Drives cigate's Unified CI/CD API with Truto's own client library, unmodified.

Environment: CIGATE_URL (cigate's base URL, given to the SDK as `base_url`), CIGATE_TOKEN
(a cigate API token), ACCOUNT_ID (an integrated account). Lists and pages through every
resource with small `limit`s so paging goes through `next_cursor` as the SDK does it, gets
single objects, and prints one JSON document on stdout for the caller to compare with
Buddy's data. Only the SDK's public API is used: `TrutoApi(token, base_url)`,
`unified_api.list(model, resource, query).to_array()` and `unified_api.get(...)`.
"""

import asyncio
import json
import os
import sys
from urllib.parse import quote

import aiohttp
from truto_python_sdk import TrutoApi

MODEL = "ci-cd"


async def main() -> None:
    api = TrutoApi(token=os.environ["CIGATE_TOKEN"], base_url=os.environ["CIGATE_URL"].rstrip("/"))
    account = {"integrated_account_id": os.environ["ACCOUNT_ID"]}

    async def list_all(resource: str, limit: int, **scope) -> list:
        return await api.unified_api.list(MODEL, resource, {**account, **scope, "limit": limit}).to_array()

    async def get(resource: str, id_: str, **scope):
        """The object, or {"error_status": n} when cigate answers with an error."""
        try:
            return await api.unified_api.get(MODEL, resource, id_, {**account, **scope})
        except aiohttp.ClientResponseError as err:
            return {"error_status": err.status}

    out: dict = {"sdk": "truto-python-sdk"}
    workspaces = await list_all("workspaces", 1)
    out["workspaces"] = [w["id"] for w in workspaces]
    ws = out["workspaces"][0]
    out["workspace_get"] = await get("workspaces", ws)

    repos = await list_all("repos", 2, workspace=ws)
    out["repos"] = [r["id"] for r in repos]
    out["repo_get"] = await get("repos", out["repos"][0], workspace=ws)

    projects = {}
    for repo in out["repos"]:
        p: dict = {}
        branches = await list_all("branches", 2, workspace=ws, repo=repo)
        p["branches"] = [b["name"] for b in branches]
        pulls = await list_all("pull-requests", 1, workspace=ws, repo=repo)
        p["pull_requests"] = pulls
        workflows = await list_all("workflow", 1, workspace=ws, repo=repo)
        p["workflows"] = [w["id"] for w in workflows]
        p["jobs"] = {}
        for wf in p["workflows"]:
            jobs = await list_all("jobs", 7, workspace=ws, project=repo, workflow=wf)
            p["jobs"][wf] = [j["id"] for j in jobs]
        # Beyond Truto: every pipeline of the project in one feed.
        merged = await list_all("jobs", 23, workspace=ws, project=repo)
        p["jobs_merged"] = [f'{j["workflow"]}/{j["id"]}' for j in merged]
        projects[repo] = p
    out["projects"] = projects

    repo = out["repos"][0]
    p = projects[repo]
    gets = {}
    gets["branch_main"] = await get("branches", "main", workspace=ws, repo=repo)
    slashed = next((b for b in p["branches"] if "/" in b), None)
    if slashed:
        # The SDK puts the id into the path as given: a `/` in it adds a path segment.
        gets["branch_slash_raw"] = await get("branches", slashed, workspace=ws, repo=repo)
        gets["branch_slash_encoded"] = await get("branches", quote(slashed, safe=""), workspace=ws, repo=repo)
    pr_repo = next((r for r, q in projects.items() if q["pull_requests"]), None)
    if pr_repo:
        number = str(projects[pr_repo]["pull_requests"][0]["id"])
        gets["pull_request"] = await get("pull-requests", number, workspace=ws, repo=pr_repo)
    wf = p["workflows"][0]
    gets["workflow"] = await get("workflow", wf, workspace=ws, repo=repo)
    gets["job"] = await get("jobs", p["jobs"][wf][0], workspace=ws, project=repo, workflow=wf)
    gets["job_missing"] = await get("jobs", "999999999", workspace=ws, project=repo, workflow=wf)
    out["gets"] = gets

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
