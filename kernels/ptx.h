// The PTX the fused kernels use beyond plain CUDA C++, one wrapper each: asynchronous copies
// (cp.async, the bulk copy engine and its tensor copies through a tensor map), mbarriers and a
// ring of them, named barriers, register reallocation between warpgroups (setmaxnreg), warp-level
// MMAs (mma.sync), programmatic dependent launch and the async-proxy fence. wgmma is in wgmma.h.
//
// Shared-memory operands are 32-bit shared addresses (shared_address), computed once by the
// caller: converting a generic pointer at every use cost the MMA warps of the mma.sync kernel ~3%
// of their stall samples (H100).
#pragma once

#include <cstdint>

// The sm_90 instructions (mbarrier phases with transaction counts, bulk and tensor copies, the
// async-proxy fence): in code for an older target they trap, and the plan runs no kernel that uses
// them there (device_code.h).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define FUSED3D_SM90_ASM(...) __trap()
#else
#define FUSED3D_SM90_ASM(...) asm volatile(__VA_ARGS__)
#endif

namespace fused3d::ptx {

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- cp.async: one thread, 16 or 4 bytes global -> shared, completing in commit groups

__device__ __forceinline__ void cp_async16(float* smem, const float* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most kPending of this thread's commit groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// A float from shared address `address`. The address's sum reaches ptxas as it is written, so that
// a register plus a uniform sum becomes one LDS [R + UR] (with a C++ pointer it rebuilt each
// address from its parts with an add per element).
__device__ __forceinline__ float ld_shared(unsigned address) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(address));
  return v;
}

// ---- mbarriers (sm_90): arrivals and transaction bytes complete a phase; waiters test its parity

__device__ __forceinline__ void mbarrier_init(unsigned bar, unsigned arrivals) {
  FUSED3D_SM90_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Barrier i of an array of them at shared address `barriers`.
__device__ __forceinline__ unsigned barrier_at(unsigned barriers, int i) { return barriers + i * sizeof(uint64_t); }
// Release: this thread's earlier shared-memory writes are seen by whoever waits for the phase.
__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
  FUSED3D_SM90_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// An arrival that also tells the barrier to expect `bytes` from bulk copies before the phase ends.
__device__ __forceinline__ void mbarrier_expect_bytes(unsigned bar, unsigned bytes) {
  FUSED3D_SM90_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(unsigned bar, unsigned parity) {
  FUSED3D_SM90_ASM(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// A ring of kSlots mbarriers used in turn: use u (u = 0, 1, 2, ...) is barrier u % kSlots, in its
// (u / kSlots)-th phase. wait(u) waits for that phase to complete; wait_previous(u) for the slot's
// use before, u - kSlots, which is how whoever refills a slot waits for its release (a fresh
// barrier counts the phase before its first as complete, so the first kSlots uses pass at once).
template <int kSlots>
struct BarrierRing {
  unsigned barriers;  // shared address of uint64_t[kSlots]

  __device__ __forceinline__ unsigned slot(int use) const { return barrier_at(barriers, use % kSlots); }
  __device__ __forceinline__ unsigned parity(int use) const { return (use / kSlots) & 1; }
  __device__ __forceinline__ void wait(int use) const { mbarrier_wait(slot(use), parity(use)); }
  __device__ __forceinline__ void wait_previous(int use) const { mbarrier_wait(slot(use), parity(use) ^ 1); }
  __device__ __forceinline__ void arrive(int use) const { mbarrier_arrive(slot(use)); }
};

// ---- bulk copies (sm_90): one thread moves a contiguous run global -> shared; the bytes landing
// complete the expect_bytes of an mbarrier's phase

__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, unsigned bytes, unsigned bar) {
  FUSED3D_SM90_ASM("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   shared_address(smem)),
               "l"(gmem), "r"(bytes), "r"(bar)
               : "memory");
}

// A tensor copy (TMA, sm_90): the box of the tensor map's box extents at coordinates (c0, ..., c4),
// innermost first, dense in shared memory (16-byte aligned rows; 128-byte aligned start); elements
// outside the tensor land as zeros. Completes the expect_bytes of `bar`'s phase.
__device__ __forceinline__ void tensor_copy_5d(void* smem, const void* tensor_map, int c0, int c1, int c2, int c3, int c4,
                                               unsigned bar) {
  FUSED3D_SM90_ASM(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(
          shared_address(smem)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar)
      : "memory");
}

// Shared memory written by ordinary stores that the async proxy (wgmma, bulk copies) reads next.
__device__ __forceinline__ void fence_proxy_async() { FUSED3D_SM90_ASM("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// ---- barriers and registers

// A barrier for `threads` threads of the block (0 is __syncthreads').
__device__ __forceinline__ void named_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Register reallocation between warpgroups (sm_90a; code for plain sm_90 keeps the entry count).
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

// ---- programmatic dependent launch (sm_90; a no-op below)

// The grid launched after this one on the stream as a programmatic dependent may start now.
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Waits until the grid this one depends on has completed and its writes are visible.
__device__ __forceinline__ void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// ---- mma.sync

// v rounded to TF32 (nearest, ties away from zero), as the bit pattern the TF32 MMAs read.
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

// Not volatile: the compiler may interleave independent MMAs (a dependent pair back to back stalls
// on the tensor pipe's latency; ncu counted 2.6 'wait' stall cycles per issued instruction).
// d += a * b, m16n8k8, TF32 operands (a as TF32 bit patterns in floats), float accumulators.
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float4& a, uint32_t b0, uint32_t b1) {
  asm(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a.x)), "r"(__float_as_uint(a.y)), "r"(__float_as_uint(a.z)), "r"(__float_as_uint(a.w)),
        "r"(b0), "r"(b1));
}

// d += a * b, m16n8k16, fp16 operands, float accumulators.
__device__ __forceinline__ void mma_f16(float (&d)[4], const uint4& a, const uint2& b) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
}
// d += a * b, m16n8k16, bfloat16 operands, float accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint4& a, const uint2& b) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y));
}
// d = a * b + {c.x, c.x, c.y, c.y}: an accumulator's first MMA starts from the bias (rows g and
// g + 8) instead of 8 moves per output row (80 per thread and work item in the mma.sync kernel).
__device__ __forceinline__ void mma_f16_from(float (&d)[4], const uint4& a, const uint2& b, const float2& c) {
  asm(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%11,%11};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b.x), "r"(b.y), "f"(c.x), "f"(c.y));
}

}  // namespace fused3d::ptx
