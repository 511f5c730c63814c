"""Worker Jobs that cannot run, on the one-node cluster: an image that cannot be pulled, a pod no node takes.

infra/k8s runs as shipped in a namespace of its own, but for short grace and backoff settings.
The Job template is broken as a user breaks it (the `scaler-job-template` ConfigMap edited, the
scaler restarted): each time the scaler makes the Jobs the backlog wants and no more over the
window, and says on each why it cannot run. Putting the shipped template back drains the backlog.
"""

import json
import time

import yaml
from kubernetes import client

from scaler import job_template
from scaler.jobs import is_finished
from tests.helpers import wait_for
from tests.helpers.cluster_uploads import backlog, publish_upload
from tests.helpers.kube import KubeCluster, deploy, worker_jobs

ROWS = 1200  # 500 a Job: the backlog wants 3 Jobs
WANTED = 3
WINDOW_S = 20.0
SETTINGS = {"WORKER_HANDLER": "worker.handlers:noop", "SCALER_POLL_SECONDS": "0.5", "SCALER_STUCK_SECONDS": "3",
            "SCALER_JOB_BACKOFF_SECONDS": "2", "SCALER_JOB_BACKOFF_MAX_SECONDS": "8"}


def use_template(kube_node: KubeCluster, ns: str, text: str) -> None:
    """What docs/scaler.md says to do: edit the ConfigMap, restart the scaler."""
    patch = json.dumps({"data": {"job-template.yaml": text}})
    kube_node.kubectl("patch", "configmap", "scaler-job-template", "-n", ns, "--type", "merge", "-p", patch)
    kube_node.kubectl("rollout", "restart", "deployment/scaler", "-n", ns)
    kube_node.kubectl("rollout", "status", "deployment/scaler", "-n", ns, "--timeout=120s", timeout=130)


def unschedulable_template() -> str:
    template = yaml.safe_load(job_template.PACKAGED.read_text())
    template["spec"]["template"]["spec"]["nodeSelector"] = {"kube-job.io/no-such-node": "true"}
    return yaml.safe_dump(template)


def stuck_events(kube_node: KubeCluster, ns: str) -> dict[str, str]:
    """Job name -> the note of its WorkerPodStuck Warning Event."""
    listed = client.EventsV1Api(kube_node.api_client()).list_namespaced_event(
        ns, field_selector="reason=WorkerPodStuck").items
    assert all(e.type == "Warning" and e.regarding.kind == "Job" for e in listed), listed
    return {e.regarding.name: e.note for e in listed}


def stuck_lines(kube_node: KubeCluster, ns: str) -> list[dict]:
    """The running scaler's `worker pod stuck` log lines."""
    out = kube_node.kubectl("logs", "deployment/scaler", "-n", ns, "--tail=-1").stdout
    return [e for e in map(json.loads, filter(lambda line: line.startswith("{"), out.splitlines()))
            if e.get("message") == "worker pod stuck"]


def broken_for_a_window(kube_node: KubeCluster, ns: str, *, before: set[str], reasons: set[str]) -> set[str]:
    """Wait until each new Job has an Event naming one of `reasons`, then to the window's end; return the new Jobs."""
    began = time.monotonic()

    def said() -> dict[str, str] | None:
        new = {j["metadata"]["name"] for j in worker_jobs(kube_node, ns)} - before
        notes = {name: note for name, note in stuck_events(kube_node, ns).items() if name in new}
        return notes if len(new) == WANTED and notes.keys() == new else None
    notes = wait_for(said, what=f"a WorkerPodStuck Event on each of {WANTED} new Jobs", timeout=90, interval=1)
    assert all(any(f": {reason} for " in note for reason in reasons) for note in notes.values()), notes
    time.sleep(max(0.0, WINDOW_S - (time.monotonic() - began)))
    made = {j["metadata"]["name"] for j in worker_jobs(kube_node, ns)} - before
    # The backlog wants 3 Jobs; polls every 0.5 s for 20 s made no more than those.
    assert made == set(notes), (made, notes)
    # A restarted scaler says again what is still stuck from before: those lines are about older Jobs.
    lines = [line for line in stuck_lines(kube_node, ns) if line["job"] in made]
    # Said once per pod and cause, not at every poll; the kubelet's two names for a bad image are one cause.
    assert len(lines) == len({line["pod"] for line in lines}) == WANTED, lines
    assert all(line["level"] == "WARNING" and line["reason"] in reasons and line["pod_message"]
               for line in lines), lines
    assert backlog(kube_node, ns, "rows") == ROWS
    return made


def test_jobs_that_cannot_run_are_bounded_and_named_and_a_fixed_template_drains_the_backlog(kube_node,
                                                                                             node_namespace):
    ns = node_namespace
    deploy(kube_node, ns, **SETTINGS)
    shipped = job_template.PACKAGED.read_text()

    use_template(kube_node, ns, shipped.replace("image: worker:latest", "image: worker:no-such-tag"))
    publish_upload(kube_node, ns, "rows", ROWS)
    bad_image = broken_for_a_window(kube_node, ns, before=set(), reasons={"ErrImagePull", "ImagePullBackOff"})

    # The stuck Jobs of the bad image are of an older template now: they no longer count.
    use_template(kube_node, ns, unschedulable_template())
    unschedulable = broken_for_a_window(kube_node, ns, before=bad_image, reasons={"Unschedulable"})

    use_template(kube_node, ns, shipped)

    def drained() -> list[dict] | None:
        fixed = [j for j in worker_jobs(kube_node, ns) if j["metadata"]["name"] not in bad_image | unschedulable]
        done = fixed and all(is_finished(j) for j in fixed) and backlog(kube_node, ns, "rows") == 0
        return fixed if done else None
    fixed = wait_for(drained, what="the fixed template's Jobs to drain the backlog", timeout=240, interval=2)
    assert len(fixed) <= WANTED and all(j["status"].get("succeeded") for j in fixed), [j["status"] for j in fixed]
