package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;

/**
 * A JavaCPP {@link PointerPointer} at the raw address of an existing {@code void*[]} (owned
 * elsewhere). Passed where a binding takes {@code void**} by value ({@code cuLaunchKernel}'s
 * {@code kernelParams}): the {@code Pointer} overloads of such calls are {@code @ByPtrPtr} and
 * would pass the address of a temporary instead.
 */
public final class PointerArray extends PointerPointer<Pointer> {
    public PointerArray(long address) {
        this.address = address;
    }
}
