"""The pool's worker (deployments.worker): what a person types is checked before anything starts.

That its flow runs start warm — forked, no `python -m prefect.engine` — and complete is proven on
the real cluster (tests/test_cluster.py: bench/cluster.py samples the processes of every tick and
records any cold flow-run start)."""

from __future__ import annotations

import pytest

from deployments.worker import parse


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--pool", "Bad Pool", "--name", "w"], "工作池名称"),
        (["--pool", "aftercare", "--name", "w", "--limit", "0"], "并发上限"),
    ],
)
def test_a_bad_pool_or_limit_is_refused_in_one_line(argv: list[str], said: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_good_command_line_is_taken_as_typed() -> None:
    args = parse(["--pool", " aftercare ", "--name", "worker-2", "--limit", "4"])
    assert (args.pool, args.name, args.limit) == ("aftercare", "worker-2", 4)
