// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"):
// counter-based random bits, a pure function of (counter, key). The dropout kernels include
// this file; src/model/philox.rs is its CPU twin and tests/kernels.rs compiles this same file
// with the host C compiler to check that both give the same bits.
#ifndef NOISEDA_PHILOX_CUH
#define NOISEDA_PHILOX_CUH

#include <stdint.h>

#ifdef __CUDACC__
#define NOISEDA_HD __host__ __device__ __forceinline__
#else
#define NOISEDA_HD static inline
#endif

#define NOISEDA_PHILOX_M0 0xD2511F53u
#define NOISEDA_PHILOX_M1 0xCD9E8D57u
#define NOISEDA_PHILOX_W0 0x9E3779B9u
#define NOISEDA_PHILOX_W1 0xBB67AE85u

typedef struct {
    uint32_t v[4];
} noiseda_u32x4;

NOISEDA_HD noiseda_u32x4 noiseda_philox4x32_10(noiseda_u32x4 c, uint32_t k0, uint32_t k1) {
    for (int round = 0; round < 10; ++round) {
        uint64_t p0 = (uint64_t)NOISEDA_PHILOX_M0 * c.v[0];
        uint64_t p1 = (uint64_t)NOISEDA_PHILOX_M1 * c.v[2];
        noiseda_u32x4 n;
        n.v[0] = (uint32_t)(p1 >> 32) ^ c.v[1] ^ k0;
        n.v[1] = (uint32_t)p1;
        n.v[2] = (uint32_t)(p0 >> 32) ^ c.v[3] ^ k1;
        n.v[3] = (uint32_t)p0;
        c = n;
        k0 += NOISEDA_PHILOX_W0;
        k1 += NOISEDA_PHILOX_W1;
    }
    return c;
}

// The 32 bits of element `e` of stream `stream` (a sample of a batch) under `seed`: block
// e / 4 of the stream, word e % 4.
NOISEDA_HD uint32_t noiseda_philox_bits(uint64_t seed, uint32_t stream, uint64_t e) {
    uint64_t block = e >> 2;
    noiseda_u32x4 c;
    c.v[0] = (uint32_t)block;
    c.v[1] = (uint32_t)(block >> 32);
    c.v[2] = stream;
    c.v[3] = 0;
    noiseda_u32x4 r = noiseda_philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    return r.v[e & 3];
}

// The 16 bits of element `e`: word e / 2, low half for even e, high half for odd e.
NOISEDA_HD uint32_t noiseda_philox_half(uint64_t seed, uint32_t stream, uint64_t e) {
    return (noiseda_philox_bits(seed, stream, e >> 1) >> (16 * (uint32_t)(e & 1))) & 0xFFFFu;
}

// Inverted dropout's multiplier of element `e`: 0 when its 16 bits are below threshold
// (= round(p·2¹⁶), so with probability p), else keep (= 1/(1 − p)).
NOISEDA_HD float noiseda_dropout_multiplier(uint64_t seed, uint32_t stream, uint64_t e,
                                            uint32_t threshold, float keep) {
    return noiseda_philox_half(seed, stream, e) < threshold ? 0.0f : keep;
}

#endif
