"""How `hope-preprocess --task-index/--num-tasks` splits the work of a Slurm array.

    python -m pytest -q tests/data/test_preprocess_tasks.py

Largest unit first, to the least-loaded task; the same split in every task (a pure function of
the sizes and the task count). The merge after the array is tested in test_preprocess.py.
"""

from __future__ import annotations

import itertools
import random

import pytest

from megatron_hope.data.preprocess.plan import assign_tasks


def _loads(sizes, tasks):
    return [sum(sizes[i] for i in task) for task in tasks]


@pytest.mark.parametrize("num_tasks", [1, 2, 3, 7, 64])
def test_every_unit_goes_to_exactly_one_task(num_tasks):
    sizes = [random.Random(num_tasks).randrange(1, 10**9) for _ in range(50)]
    tasks = assign_tasks(sizes, num_tasks)
    assert len(tasks) == num_tasks
    assert sorted(itertools.chain(*tasks)) == list(range(len(sizes)))
    assert all(task == sorted(task) for task in tasks)


def test_largest_first_to_the_least_loaded_task():
    # Sorted file order puts the three big files at 0, 3 and 6: i % 3 gives them all to task 0.
    sizes = [90, 1, 1, 80, 1, 1, 70, 1, 1]
    assert [i for i in range(len(sizes)) if i % 3 == 0] == [0, 3, 6]
    tasks = assign_tasks(sizes, 3)
    assert tasks == [[0], [3], [1, 2, 4, 5, 6, 7, 8]]
    assert _loads(sizes, tasks) == [90, 80, 76]  # i % 3: [240, 3, 3]


def test_ties_are_broken_the_same_way_every_time():
    sizes = [5] * 10
    assert assign_tasks(sizes, 4) == [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]
    shuffled = random.Random(0).sample(range(1000), 200)
    assert assign_tasks(shuffled, 16) == assign_tasks(list(shuffled), 16)


def _best_split(sizes, num_tasks):
    """The smallest possible busiest task, by trying every assignment (small cases only)."""
    return min(max(_loads(sizes, [[i for i, t in enumerate(owners) if t == task]
                                  for task in range(num_tasks)]))
               for owners in itertools.product(range(num_tasks), repeat=len(sizes)))


def test_within_four_thirds_of_the_best_split():
    """Graham's bound for largest-first greedy: (4/3 - 1/(3m)) x the optimum."""
    rng = random.Random(2410)
    for _ in range(30):
        num_tasks = rng.randrange(2, 4)
        sizes = [rng.randrange(1, 100) for _ in range(rng.randrange(2, 8))]
        greedy = max(_loads(sizes, assign_tasks(sizes, num_tasks)))
        assert greedy <= (4 / 3 - 1 / (3 * num_tasks)) * _best_split(sizes, num_tasks)
    assert max(_loads([3, 3, 2, 2, 2], assign_tasks([3, 3, 2, 2, 2], 2))) == 7  # tight: 7/6


def test_large_arrays_stay_close_to_even():
    rng = random.Random(2410)
    for _ in range(20):
        sizes = [int(rng.lognormvariate(20, 1.5)) for _ in range(rng.randrange(10, 300))]
        num_tasks = rng.randrange(2, 65)
        # List scheduling: no task exceeds the mean by more than one unit.
        assert max(_loads(sizes, assign_tasks(sizes, num_tasks))) <= (
            sum(sizes) / num_tasks + max(sizes))


def test_more_tasks_than_units_leaves_some_idle():
    assert assign_tasks([3, 9], 4) == [[1], [0], [], []]
    assert assign_tasks([], 2) == [[], []]


def test_the_split_depends_on_the_task_count():
    """Why the Slurm example passes --num-tasks explicitly: a resubmission of tasks 5 and 17
    (`sbatch --array=5,17`) sees SLURM_ARRAY_TASK_COUNT=2, and task 5 would then encode another
    share than the one that failed."""
    sizes = list(range(100, 0, -1))
    assert assign_tasks(sizes, 64)[5] != assign_tasks(sizes, 2)[1]


def test_zero_tasks_is_refused():
    with pytest.raises(ValueError, match="--num-tasks"):
        assign_tasks([1], 0)
