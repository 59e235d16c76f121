"""Scale-out over a Dask cluster: one task per video, each running facecut's own
single-machine engine on a worker (optional extra ``facecut[dask]``).

The client (``facecut run ... --cluster ADDRESS``) plans the batch exactly as a
local run does (same skip/resume rules: :func:`facecut.resume.plan_run`), checks on
every worker that it can run it (:func:`check_worker`: same work folder, input
files, non-daemonic process, same facecut), and only then submits one task per
pending video. A task (:func:`analyze_video`) runs
``Coordinator(work, cfg_for_this_machine, only=[rel], bookkeeping=False)``: its
own decoder processes, ring and inference processes, with the worker machine's
execution provider and saved bench profile for the counts the client did not
pin. Submission, retries and worker discovery are Dask's; facecut adds no
protocol of its own (progress rides Dask's structured events,
``Worker.log_event`` / ``Client.subscribe_topic``).

Failures. Dask retries a task that raised once (``retries=1``) and reschedules
a task whose worker died (the scheduler's ``allowed-failures``; ``local:N`` sets
it to 1, so both mean "fails twice"). Per-video problems (unreadable or corrupt
media, a decoder crash) are caught by the engine on the worker and written to
the log's Done record and marker exactly as a local run writes them. What still
fails a task twice is the machine, not the video (a worker killed or lost, a
model or provider missing there, a path it cannot see): such a video is
reported failed *for this run* with its reason (exit code 3) but deliberately
left pending on disk, so re-running the command retries it and resumes its log.
The client never writes a video's log: the only writer is the task that holds
the video's lease.

Single writer. One task per video; a task writes a video's log only while it
holds ``WORK/analysis/<key>.lease`` (created with ``O_EXCL``: host, pid, process
start time, worker address, token). A retried task takes the lease over only
from a holder that is gone: same host and the process has exited, or a worker
the scheduler no longer lists (or that now runs another process), or a lease
not refreshed for :data:`LEASE_TTL` seconds. Otherwise it fails clearly
(:class:`LeaseHeld`). Taking over from another machine first *fences* the log:
it is copied and renamed over itself, so a zombie still holding the old file
writes into an orphaned inode (POSIX, NFS), or the rename fails because the
file is still open (Windows, SMB) and the task refuses. The holder re-checks its
token every second and stops its coordinator when the lease was taken (what
it writes in between goes to the orphaned file; a completion marker it might
write by name is rewritten by the new holder, and a resume trusts the log's
Done record, never a marker alone). Resuming
a partial log is then the ordinary local resume: the writer truncates a torn
tail on open and continues after the last committed sample.

Paths. All machines must see the input and work folders, at the same paths or
through ``FACECUT_PATH_MAP`` set on the worker (``CLIENT_PREFIX=WORKER_PREFIX``
pairs separated by ``;``, e.g. ``Z:\\media=/mnt/media`` on a Linux worker of a
Windows client).

Modules: paths (path mapping, worker checks), lease (one writer per log),
task (the worker side), client (the client side).
"""

from facecut.cluster.client import (
    LOCAL_CONFIG,
    ClusterError,
    ClusterResult,
    analyze_on_cluster,
    connect,
    local_cluster,
)
from facecut.cluster.lease import LEASE_TTL, Lease, LeaseHeld, LeaseLost, fence, holder_alive
from facecut.cluster.paths import (
    PATH_MAP_ENV,
    PROBE,
    PathNotVisible,
    check_worker,
    local_path,
    path_map,
)
from facecut.cluster.task import TaskCancelled, analyze_video

__all__ = [
    "LEASE_TTL", "LOCAL_CONFIG", "PATH_MAP_ENV", "PROBE", "ClusterError", "ClusterResult", "Lease", "LeaseHeld",
    "LeaseLost", "PathNotVisible", "TaskCancelled", "analyze_on_cluster", "analyze_video", "check_worker",
    "connect", "fence", "holder_alive", "local_cluster", "local_path", "path_map",
]
