"""The rank helpers in one process (rank 0 of 1): every collective is a no-op there, and
the shares every rank computes alike are deterministic and balanced."""

from taq_runtime import ranks


def test_one_process_is_rank_zero_of_one_and_owns_everything():
    assert (ranks.rank(), ranks.size(), ranks.tag()) == (0, 1, "")
    assert all(ranks.owns(i) for i in range(5))
    ranks.barrier()
    ranks.check_launch(["--any", "flags"])
    assert ranks.on_rank0(lambda: 7) == 7 and ranks.rank0_first(lambda: 8) == 8


def test_blocks_are_balanced_by_weight_largest_first():
    assert ranks.balance([1, 1, 1, 1], ranks=2) == [[0, 2], [1, 3]]
    assert ranks.balance([4, 1, 1, 1, 1], ranks=2) == [[0], [1, 2, 3, 4]]
    assert ranks.balance([3, 5, 2], ranks=3) == [[1], [0], [2]]
    assert ranks.balance([2, 2], ranks=3) == [[0], [1], []]  # more ranks than blocks


def test_code_version_is_stable_and_covers_the_taq_modules():
    assert ranks.code_version() == ranks.code_version()
    assert len(ranks.code_version()) == 64
