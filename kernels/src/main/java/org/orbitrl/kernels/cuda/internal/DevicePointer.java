package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.javacpp.Pointer;

/**
 * A JavaCPP {@link Pointer} at a raw address (device or host) that owns nothing: JavaCPP never
 * frees it, so it is safe to create for any address whose memory is owned elsewhere.
 */
public final class DevicePointer extends Pointer {
    public DevicePointer(long address) {
        this.address = address;
    }
}
