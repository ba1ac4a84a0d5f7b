"""The stream kernel's transparent-huge-page advice (impls/additive_stream.py ``advise_huge_pages``): a fresh
buffer of HUGE_PAGE_MIN_BYTES or more gets MADV_HUGEPAGE on its 2 MiB-aligned part where the kernel's THP mode
allows it (``hg`` in its mapping's VmFlags), a smaller one none, and a kernel without THP (or with it ``never``)
is a silent no-op; the stream forward and backward advise the outputs they allocate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from testkit.smaps import huge_page_advised

from fastformer_bench.impls import additive_stream as stream

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
ALLOWS = THP.exists() and ("[madvise]" in THP.read_text() or "[always]" in THP.read_text())


@pytest.fixture
def thp_mode(monkeypatch, tmp_path):
    """Point the advice at a THP mode file of our own (the answer is cached per process: cleared around)."""
    def set_mode(text: str | None):
        path = tmp_path / "enabled"
        if text is not None:
            path.write_text(text)
        monkeypatch.setattr(stream, "_THP_ENABLED", path)
        stream._madvise.cache_clear()
    yield set_mode
    stream._madvise.cache_clear()


@pytest.mark.skipif(not ALLOWS or not Path("/proc/self/smaps").exists(),
                    reason="this kernel does not allow madvise huge pages")
def test_large_buffer_is_advised_and_small_one_is_not():
    stream._madvise.cache_clear()
    big = stream.advise_huge_pages(torch.empty(3 * stream.HUGE_PAGE_MIN_BYTES // 4))
    middle = (big.data_ptr() + big.numel() * 2) // (2 << 20) * (2 << 20)
    assert huge_page_advised(middle)
    small = stream.advise_huge_pages(torch.empty(1024))
    assert small.numel() == 1024  # returned as is; a heap block this small is never given the advice
    assert stream.advise_huge_pages(big) is big


@pytest.mark.parametrize("mode", [None, "always madvise [never]\n", "garbage\n"])
def test_no_thp_is_a_silent_no_op(thp_mode, mode):
    thp_mode(mode)
    t = torch.empty(stream.HUGE_PAGE_MIN_BYTES // 4)
    assert stream.advise_huge_pages(t) is t and stream._madvise() is None


@pytest.mark.parametrize("mode", ["always [madvise] never\n", "[always] madvise never\n"])
def test_modes_that_allow_it_give_advice(thp_mode, mode):
    thp_mode(mode)
    assert stream._madvise() is not None


@pytest.mark.skipif(stream.STREAM.unsupported_reason("cpu", torch.float32) is not None,
                    reason=str(stream.STREAM.unsupported_reason("cpu", torch.float32)))
def test_stream_advises_its_large_outputs(monkeypatch):
    """Forward's out and backward's dx above the threshold go through the advice; the result is unchanged."""
    seen = []
    real = stream.advise_huge_pages
    monkeypatch.setattr(stream, "advise_huge_pages", lambda t: seen.append(t.shape) or real(t))
    monkeypatch.setattr(stream, "HUGE_PAGE_MIN_BYTES", 1)  # advise even this test's small buffers
    x = torch.randn(3, 2, 40, 16, requires_grad=True)
    w = torch.randn(2, 2, 8)
    out = stream.stream_additive_attention(x, w)
    out.sum().backward()
    assert seen == [torch.Size([2, 40, 16]), torch.Size([3, 2, 40, 16])]
    want = stream.stream_additive_attention(x.detach(), w)
    torch.testing.assert_close(out.detach(), want, rtol=0, atol=0)
