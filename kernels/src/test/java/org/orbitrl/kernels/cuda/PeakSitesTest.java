package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;

import java.util.List;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The peak-site bookkeeping {@link CudaAllocator} keeps under {@code -Dorbit.cuda.peakSites=true}, on
 * the host: call sites found past the allocator's frames, per-site bytes at each category's highest
 * peak against sums worked out by hand, categories independent, frees and address reuse.
 */
class PeakSitesTest {
    private static final MemoryCategory ACT = MemoryCategory.ACTIVATIONS;

    @Test
    void sitesOfTheHighestPeak() {
        PeakSites s = new PeakSites(Set.of(FakeAllocator.class.getName(), PeakSites.class.getName()));
        FakeAllocator a = new FakeAllocator(s);
        fromA(a, 1000);                      // site A: 1000
        fromA(a, 500);                       // site A: 1500
        long b1 = fromB(a, 4000);            // site B: 4000 -> peak 5500
        a.allocate(MemoryCategory.LOGITS, 9000);
        a.release(b1);                       // live 1500
        long b2 = fromB(a, 3000);            // 4500 < 5500: no new peak
        assertEquals(5500, s.peakBytes(ACT));
        List<PeakSites.Site> peak = s.atPeak(ACT);
        assertEquals(2, peak.size(), () -> "sites " + peak);
        assertTrue(peak.get(0).site().startsWith("PeakSitesTest.fromB:"), () -> "first site " + peak.get(0));
        assertEquals(4000, peak.get(0).bytes());
        assertEquals(1, peak.get(0).allocations());
        assertTrue(peak.get(1).site().startsWith("PeakSitesTest.fromA:"), () -> "second site " + peak.get(1));
        assertEquals(1500, peak.get(1).bytes());
        assertEquals(2, peak.get(1).allocations());
        assertEquals(9000, s.peakBytes(MemoryCategory.LOGITS));
        assertEquals(List.of(9000L), s.atPeak(MemoryCategory.LOGITS).stream().map(PeakSites.Site::bytes).toList());

        long b3 = fromB(a, 2500);            // 1500 + 3000 + 2500 = 7000: a new peak, B twice
        assertEquals(7000, s.peakBytes(ACT));
        List<PeakSites.Site> next = s.atPeak(ACT);
        assertEquals(5500, next.get(0).bytes());
        assertEquals(2, next.get(0).allocations());
        assertEquals(7000, next.stream().mapToLong(PeakSites.Site::bytes).sum());
        a.release(b2);
        a.release(b3);
        assertEquals(1500, s.liveBytes(ACT));
        assertEquals(1, s.liveSites(ACT).size());
        assertEquals(7000, s.peakBytes(ACT), "the peak is kept after the frees");
    }

    @Test
    void aReusedAddressReplacesItsStaleEntry() {
        PeakSites s = new PeakSites(Set.of());
        s.allocated(0x1000, ACT, 256, "x");
        s.allocated(0x1000, ACT, 512, "y");  // the release was not seen: the old entry goes
        assertEquals(512, s.liveBytes(ACT));
        assertEquals(List.of(new PeakSites.Site("y", 512, 1)), s.liveSites(ACT));
        s.released(0x1000);
        s.released(0x2000);                  // unknown: ignored
        assertEquals(0, s.liveBytes(ACT));
        assertEquals(512, s.peakBytes(ACT));
    }

    private static long fromA(FakeAllocator a, long bytes) {
        return a.allocate(ACT, bytes);
    }

    private static long fromB(FakeAllocator a, long bytes) {
        return a.allocate(ACT, bytes);
    }
}

/** Stands in for the allocator: its frames are skipped, so the site is its caller. */
final class FakeAllocator {
    private final PeakSites sites;
    private long next = 0x10000;

    FakeAllocator(PeakSites sites) {
        this.sites = sites;
    }

    long allocate(MemoryCategory c, long bytes) {
        long address = next;
        next += 1 << 20;
        sites.allocated(address, c, bytes, sites.callSite());
        return address;
    }

    void release(long address) {
        sites.released(address);
    }
}
