"""Helpers for tests that start real multi-rank jobs."""
import psutil


def leftovers(log_dir):
    """Processes whose command line mentions this job's log folder (rank entries and their CMDs)."""
    found = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            if str(log_dir) in " ".join(p.info["cmdline"] or []) or \
                    (p.info["environ"] or {}).get("TRTX_RANK_LOG_DIR") == str(log_dir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found
