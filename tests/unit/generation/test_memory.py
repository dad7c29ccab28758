"""plan_memory: the row budget and decode chunk a card's free memory allows (made-up cards)."""

from __future__ import annotations

from gouache.generation.loop.memory import plan_memory

GB = 1 << 30


def test_a_bigger_card_gets_more_rows_and_decodes():
    small = plan_memory(20 * GB, 5 * GB, 1024, 1024)
    big = plan_memory(76 * GB, 5 * GB, 1024, 1024)
    assert small.row_budget < big.row_budget and small.decode_chunk <= big.decode_chunk
    assert small.row_budget >= 1


def test_larger_images_get_fewer_rows_and_fp32_half_as_many():
    assert plan_memory(20 * GB, 0, 512, 512).row_budget > plan_memory(20 * GB, 0, 1024, 1024).row_budget
    fp16 = plan_memory(20 * GB, 0, 1024, 1024)
    fp32 = plan_memory(20 * GB, 0, 1024, 1024, dtype_bytes=4)
    assert fp32.row_budget <= fp16.row_budget // 2 + 1


def test_a_model_not_yet_loaded_is_paid_for_first():
    assert plan_memory(10 * GB, 7 * GB, 1024, 1024, loaded=False).row_budget < plan_memory(
        10 * GB, 7 * GB, 1024, 1024
    ).row_budget


def test_caps_and_floors():
    assert plan_memory(1000 * GB, 0, 64, 64).row_budget == 64
    assert plan_memory(1000 * GB, 0, 64, 64, most_rows=16).row_budget == 16
    nothing = plan_memory(512 * 1024 * 1024, 0, 1024, 1024)
    assert nothing.row_budget == 1 and nothing.decode_chunk == 1
