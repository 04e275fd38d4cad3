#!/usr/bin/python3
"""Runs inside the emulated appliance (test image only): observes the boot and reports
``VMTEST key=value`` lines on the serial console for the host-side harness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONSOLE = "/dev/ttyAMA0"
SCENARIO_FILE = Path("/boot/autoboot/vmtest/scenario")
# the bench scenario: its arguments come from, and its results go to, the harness's FAT folder
OUT_DIR = SCENARIO_FILE.parent
BENCH_PHOTOS = "/usr/share/deskwatch-vmtest/bench-photos"
MODELMEM = "/usr/local/lib/deskwatch-vmtest/modelmem.py"
VENV = "/opt/deskwatch/venv"


def say(key: str, value: object) -> None:
    line = f"VMTEST {key}={value}\n"
    with open(CONSOLE, "w") as fh:
        fh.write(line)


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def sh(*cmd: str, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return (proc.stdout + proc.stderr).strip()


def show(unit: str, *props: str) -> dict[str, str]:
    out = sh("systemctl", "show", unit, "-p", ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dt_u32(name: str) -> int | None:
    path = Path("/proc/device-tree/chosen/bootloader") / name
    try:
        return int.from_bytes(path.read_bytes()[:4], "big")
    except OSError:
        return None


def wait_active(unit: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = show(unit, "ActiveState", "SubState")
        if state.get("ActiveState") == "active" and state.get("SubState") == "running":
            return True
        if state.get("ActiveState") == "failed":
            return False
        time.sleep(1)
    return False


def dump(prefix: str, text: str) -> None:
    with open(CONSOLE, "w") as fh:
        for line in text.splitlines():
            fh.write(f"{prefix} {line}\n")


def boot_facts() -> None:
    say("slot_partition", dt_u32("partition"))
    say("tryboot", dt_u32("tryboot"))
    say("agent_start_uptime", f"{uptime():.1f}")


def ready_timings() -> bool:
    ok = wait_active("deskwatch.service", 900)
    say("deskwatch_active", ok)
    say("ready_uptime", f"{uptime():.1f}")
    d = show(
        "deskwatch.service", "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic", "MainPID", "NRestarts"
    )
    start_us, ready_us = (
        int(d.get("ExecMainStartTimestampMonotonic") or 0),
        int(d.get("ActiveEnterTimestampMonotonic") or 0),
    )
    say("daemon_start_monotonic", f"{start_us / 1e6:.1f}")
    say("daemon_ready_monotonic", f"{ready_us / 1e6:.1f}")
    p = show(
        "deskwatch-provision.service",
        "ExecMainStartTimestampMonotonic",
        "ExecMainExitTimestampMonotonic",
        "ExecMainStatus",
        "Result",
    )
    say("provision_start_monotonic", f"{int(p.get('ExecMainStartTimestampMonotonic') or 0) / 1e6:.1f}")
    say("provision_end_monotonic", f"{int(p.get('ExecMainExitTimestampMonotonic') or 0) / 1e6:.1f}")
    say("provision_status", p.get("ExecMainStatus"))
    say("systemd_analyze", sh("systemd-analyze").splitlines()[0] if sh("systemd-analyze") else "")
    return ok


def provisioning_facts() -> None:
    etc = Path("/etc/deskwatch")
    say("config_installed", (etc / "config.yaml").is_file())
    key = etc / "device.key"
    if key.exists():
        st = key.stat()
        say("device_key_mode", f"{st.st_mode & 0o777:o}")
        say("device_key_owner", sh("stat", "-c", "%U", str(key)))
    bundle = Path("/boot/firmware/deskwatch")
    say("bundle_left", ",".join(sorted(p.name for p in bundle.iterdir())) if bundle.is_dir() else "")
    result = bundle / "provision-result.txt"
    if result.exists():
        dump("PROVISION", result.read_text())


def read_only_layout() -> None:
    pid = show("deskwatch.service", "MainPID").get("MainPID", "0")
    for path in ("/opt/deskwatch", "/etc/deskwatch", "/usr", "/var/lib/deskwatch"):
        probe = f"{path}/.vmtest-write-probe"
        out = sh("nsenter", "-t", pid, "-m", "--", "sh", "-c", f"touch {probe} && rm -f {probe} && echo writable")
        say(f"daemon_view_{path.strip('/').replace('/', '_')}", "writable" if out.endswith("writable") else "read-only")
    say("root_mount", sh("findmnt", "-no", "SOURCE,OPTIONS", "/"))


def watchdog_restart() -> None:
    before = show("deskwatch.service", "MainPID", "NRestarts")
    pid = before.get("MainPID", "0")
    say("watchdog_stop_pid", pid)
    t0 = uptime()
    os.kill(int(pid), 19)  # SIGSTOP: the whole daemon hangs, its WATCHDOG=1 pings stop
    end = time.monotonic() + 600
    restarted = False
    while time.monotonic() < end:
        now = show("deskwatch.service", "MainPID", "NRestarts", "ActiveState", "SubState")
        if (
            now.get("NRestarts") != before.get("NRestarts")
            and now.get("SubState") == "running"
            and now.get("MainPID") != pid
        ):
            restarted = True
            break
        time.sleep(2)
    say("watchdog_restarted", restarted)
    say("watchdog_restart_seconds", f"{uptime() - t0:.1f}")
    dump(
        "WATCHDOG",
        sh("journalctl", "-b", "-u", "deskwatch.service", "-o", "short-monotonic", "--no-pager", "-p", "warning"),
    )


JOBS_DIR = SCENARIO_FILE.parent / "jobs"  # signed jobs the harness put there: config-*.json, software-*.json
QUEUE = Path("/var/lib/deskwatch/jobs/queue")


def queue_job(path: Path) -> str:
    """Queue a signed job as the daemon does (a file of the service user's in its queue):
    deskwatch-jobs.path starts deskwatch-jobs.service, whose sandbox runs it."""
    job_id = path.stem
    QUEUE.mkdir(parents=True, exist_ok=True)
    tmp = QUEUE / f".{job_id}.tmp"
    tmp.write_bytes(path.read_bytes())
    sh("chown", "-R", "deskwatch:deskwatch", "/var/lib/deskwatch/jobs")
    tmp.rename(QUEUE / f"{job_id}.json")
    path.unlink()  # the harness's copy: not queued again at a later round
    os.sync()
    return job_id


def job_outcome(job_id: str, timeout: float) -> str:
    """The runner's line for the job (the daemon publishes and removes done/<id>.json)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        log = sh("journalctl", "-b", "-u", "deskwatch-jobs.service", "--no-pager", "-o", "cat")
        lines = [line for line in log.splitlines() if f"job {job_id} (" in line]
        if lines:
            return lines[-1]
        time.sleep(2)
    return "no outcome"


def follow_jobs_unit() -> subprocess.Popen[bytes]:
    """The jobs unit's journal on the console as it runs (a software job ends in a reboot)."""
    return subprocess.Popen(
        f"journalctl -f -n 0 -o short-monotonic -u deskwatch-jobs.service | sed -u 's/^/JOBS /' > {CONSOLE}",
        shell=True,
    )


def run_config_jobs() -> None:
    """Each signed config job, run by the real path unit and sandboxed service: its outcome,
    the config it left, and the daemon back READY."""
    for path in sorted(JOBS_DIR.glob("config-*.json")):
        job_id = queue_job(path)
        say(f"job_{job_id}", job_outcome(job_id, 600))
        say(f"job_{job_id}_config_line", sh("head", "-1", "/etc/deskwatch/config.yaml"))
        say(f"job_{job_id}_daemon_active", wait_active("deskwatch.service", 300))
        unit = show("deskwatch-jobs.service", "Result", "ExecMainStatus")
        say(f"job_{job_id}_unit", f"{unit.get('Result')}/{unit.get('ExecMainStatus')}")


def install_update() -> None:
    ready_timings()
    SCENARIO_FILE.write_text("observe\n")
    os.sync()
    say("install_start_uptime", f"{uptime():.1f}")
    software = sorted(JOBS_DIR.glob("software-*.json"))
    if software:  # the update as a remote job: through deskwatch-jobs.service's sandbox
        follow_jobs_unit()
        run_config_jobs()
        job_id = queue_job(software[0])
        say("install_job", job_id)
        say(f"job_{job_id}", job_outcome(job_id, 3600))  # then the unit reboots into the trial slot
        time.sleep(180)
        say("install_exit", "no reboot: " + show("deskwatch-jobs.service", "Result").get("Result", "?"))
        dump("JOBSLOG", sh("journalctl", "-b", "-u", "deskwatch-jobs.service", "--no-pager", "-o", "short-monotonic"))
        subprocess.run(["systemctl", "poweroff"], check=False)
        return
    proc = subprocess.Popen(
        ["/opt/deskwatch/venv/bin/deskwatch", "update", "install", "/dev/vdb", "--job-id", "vm-job"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        say("install_progress", f"{uptime():.1f} {line.strip()}")
    say("install_exit", proc.wait())


def observe_update() -> bool:
    """Wait for the confirm unit; True when the update reached a final state here."""
    say("deskwatch_active", wait_active("deskwatch.service", 420))
    end = time.monotonic() + 900
    while time.monotonic() < end:
        d = show("deskwatch-update-confirm.service", "ActiveState", "Result", "ExecMainExitTimestampMonotonic")
        if d.get("ActiveState") in ("inactive", "failed") and d.get("ExecMainExitTimestampMonotonic", "0") != "0":
            break
        time.sleep(2)
    state_file = Path("/boot/autoboot/deskwatch-update.json")
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    say("update_state", state.get("state"))
    say("update_reason", state.get("reason"))
    say("update_record", json.dumps(state, sort_keys=True))
    say("running_version", sh("/opt/deskwatch/venv/bin/deskwatch", "--version"))
    say("confirm_done_uptime", f"{uptime():.1f}")
    dump(
        "CONFIRM",
        sh(
            "journalctl",
            "-b",
            "-u",
            "deskwatch-update-confirm.service",
            "-u",
            "deskwatch.service",
            "-o",
            "short-monotonic",
            "--no-pager",
        ),
    )
    return state.get("state") in ("committed", "rolled_back", "failed")


def machine_facts() -> None:
    """What the guest's kernel says the CPU is (XNNPACK picks its kernels by these features)."""
    info = Path("/proc/cpuinfo").read_text()
    first = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in info.split("\n\n")[0].splitlines())
    )
    lscpu = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in sh("lscpu").splitlines()))
    say("cpu_model", lscpu.get("Model name", ""))
    say("cpu_part", first.get("CPU part", ""))
    say("cpu_features", first.get("Features", ""))
    say("cpus", os.cpu_count())
    say("mem_total", Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip())
    say("kernel", sh("uname", "-srm"))
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # "always" rounds big buffers up to 2 MB pages
    say("transparent_hugepage", thp.read_text().strip() if thp.exists() else "not built in")


def run_bench() -> None:
    """``deskwatch bench --json`` on the carried photos (``runs`` times) and the per-model
    probe, with the daemon stopped so nothing competes; stdout/stderr into OUT_DIR."""
    say("deskwatch_active", wait_active("deskwatch.service", 900))
    say("ready_uptime", f"{uptime():.1f}")
    sh("systemctl", "stop", "deskwatch.service", timeout=300)
    say("deskwatch_state", show("deskwatch.service", "ActiveState").get("ActiveState"))
    machine_facts()
    args = (OUT_DIR / "bench-args").read_text().split()
    runs = int((OUT_DIR / "bench-runs").read_text())
    jobs = [
        (f"bench-{n}", [f"{VENV}/bin/deskwatch", "bench", "--config", "/nonexistent/config.yaml", "--json",
                        "--photos", BENCH_PHOTOS, *args])
        for n in range(1, runs + 1)
    ]  # fmt: skip
    jobs.append(("modelmem", [f"{VENV}/bin/python", MODELMEM, "--json"]))
    for name, cmd in jobs:
        say(f"{name}_start_uptime", f"{uptime():.1f}")
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = -1, "", f"timed out after {exc.timeout} s\n"
        (OUT_DIR / f"{name}.json").write_text(out)
        (OUT_DIR / f"{name}.err").write_text(err[-20000:])
        os.sync()
        say(f"{name}_exit", code)
        say(f"{name}_seconds", f"{time.monotonic() - t0:.1f}")
        if code != 0:
            dump(name.upper(), err[-3000:])


def main() -> int:
    scenario = SCENARIO_FILE.read_text().strip() if SCENARIO_FILE.exists() else "boot"
    say("scenario", scenario)
    boot_facts()
    try:
        if scenario == "boot":
            if ready_timings():
                provisioning_facts()
                read_only_layout()
                watchdog_restart()
            dump(
                "JOURNAL",
                sh(
                    "journalctl",
                    "-b",
                    "-u",
                    "deskwatch.service",
                    "-u",
                    "deskwatch-provision.service",
                    "-o",
                    "short-monotonic",
                    "--no-pager",
                ),
            )
        elif scenario == "bench":
            run_bench()
        elif scenario == "ready":
            ready_timings()
        elif scenario == "install":
            install_update()
            return 0  # the install reboots the machine
        elif scenario == "observe" and not observe_update():
            return 0  # the confirm unit reboots into the old slot
    except Exception as exc:  # report, then power off: the harness must not wait for a timeout
        say("agent_error", repr(exc))
    say("done", json.dumps({"uptime": uptime()}))
    subprocess.run(["systemctl", "poweroff"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
