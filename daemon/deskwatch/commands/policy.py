"""``deskwatch policy show``: the effective rules and what the device captures,
checks, sends and keeps, in plain language."""

from __future__ import annotations

import argparse
import json

from deskwatch.commands.common import load_config_or_exit

NAME = "policy"
HELP = "show the effective rules and, in plain language, what this device captures, checks, sends and keeps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="show", choices=["show"], help="what to do (show)")
    parser.add_argument("--json", action="store_true", help="the effective rules as JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from deskwatch.policy.profiles import identity_allowed, profile_of
    from deskwatch.technician.explain import (
        effective_rules_table,
        explain,
        on_demand_per_hour,
        profile_overrides,
        random_scans,
        template_status,
    )

    cfg = load_config_or_exit(args)
    if args.json:
        prof = profile_of(cfg.policy)
        also, without = profile_overrides(cfg)
        print(
            json.dumps(
                {
                    "profile": prof.name,
                    "profile_overrides": {"also": also, "without": without},
                    "identity_check": identity_allowed(cfg.policy),
                    "face_template": template_status(cfg).as_json(),
                    "random_scans": random_scans(cfg),
                    "on_demand_scans_per_hour": on_demand_per_hour(cfg),
                    "images_leave_device": prof.images_leave and cfg.evidence.enabled,
                    "retention_days": cfg.evidence.retention_days,
                    "rules": effective_rules_table(cfg),
                },
                indent=2,
            )
        )
        return 0
    print(explain(cfg), end="")
    return 0
