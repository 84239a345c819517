// wgmma (sm_90a) as the planes kernel (conv3d_k4_planes.cu), the box implicit-GEMM kernel
// (conv3d_igemm_box.cu) and the probes (tools/probes/) use it: B tiles in shared memory through a
// descriptor, m64n64k16 (fp16) and m64nNk8 (TF32) with A from registers, the fence / commit / wait,
// and the pin that keeps the compiler's hands off an accumulator in flight. Outside
// the arch-specific target the instructions compile to nothing and kAvailable is false (the plan
// then never picks the planes kernel: device_code.h). b_offset, the B layout,
// is host code too: the weight packing's unit test checks against it.
#pragma once

#include <cstdint>

namespace wgmma {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FUSED3D_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
constexpr bool kAvailable = true;
#else
#define FUSED3D_WGMMA_ASM(...)
constexpr bool kAvailable = false;
#endif

// B (K 16 x N n, fp16) K-major without swizzle: core matrix (N block nb, K block kb) of 8 n x 8 k
// (16 bytes per n) at byte (2 * nb + kb) * 128, so the leading (K) byte offset is 128 and the stride
// (N) byte offset 256. b_offset is element (k, n)'s index in halves (tools/probes/wgmma_rows.cu
// checks the layout against a host GEMM).
#if defined(__CUDACC__)
#define FUSED3D_WGMMA_HOST_DEVICE __host__ __device__
#else
#define FUSED3D_WGMMA_HOST_DEVICE
#endif
FUSED3D_WGMMA_HOST_DEVICE constexpr int b_offset(int k, int n) { return (2 * (n / 8) + k / 8) * 64 + (n % 8) * 8 + k % 8; }

#if defined(__CUDACC__)
__device__ __forceinline__ uint64_t descriptor(unsigned smem_address) {
  constexpr uint64_t kLeadingBytes = 128, kStrideBytes = 256;
  return uint64_t((smem_address & 0x3FFFF) >> 4) | ((kLeadingBytes >> 4) << 16) | ((kStrideBytes >> 4) << 32);
}
__device__ __forceinline__ uint64_t descriptor(const void* smem) {
  return descriptor(static_cast<unsigned>(__cvta_generic_to_shared(smem)));
}

// d = a * b + (scale_d ? d : 0). d and a are read asynchronously: nothing but a wgmma may touch
// them before wait. d is tied and scale_d a runtime predicate: with d write-only ptxas serialized
// the wgmmas, and with scale_d an immediate 0 it dropped three rows' wgmmas of an unrolled row loop
// (ptxas of CUDA 13.0).
__device__ __forceinline__ void m64n64k16(float (&d)[32], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  FUSED3D_WGMMA_ASM(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,"
      "%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}


// d += a * b in TF32 (m64nNk8, N = 8 * kNTiles), A (64 x 8) from registers in mma.sync m16n8k8's
// fragment layout per warp (warp w: rows 16 w..16 w + 15), B (8 x N) K-major in shared memory
// without swizzle: element (k, n) at float ((2 * (n / 8) + k / 4) * 32 + (n % 8) * 4 + k % 4), the
// bytes of b_offset's layout with 4-byte elements, so the same descriptor. d is the m16n8
// accumulator layout per n8 tile, tied as m64n64k16's is.
template <int kNTiles>
__device__ __forceinline__ void m64k8_tf32(float (&d)[kNTiles][4], const uint32_t (&a)[4], uint64_t b, int scale_d) {
  static_assert(kNTiles == 1 || kNTiles == 2 || kNTiles == 4 || kNTiles == 8, "N of 8, 16, 32 or 64");
  if constexpr (kNTiles == 1)
    FUSED3D_WGMMA_ASM(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k8.f32.tf32.tf32 "
        "{%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, %8, p, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
  if constexpr (kNTiles == 2)
    FUSED3D_WGMMA_ASM(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k8.f32.tf32.tf32 "
        "{%0,%1,%2,%3,%4,%5,%6,%7}, "
        "{%8,%9,%10,%11}, %12, p, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
  if constexpr (kNTiles == 4)
    FUSED3D_WGMMA_ASM(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
        "{%16,%17,%18,%19}, %20, p, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
  if constexpr (kNTiles == 8)
    FUSED3D_WGMMA_ASM(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
        "{%32,%33,%34,%35}, %36, p, 1, 1;\n}\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]),
          "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]),
          "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
          "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));
}

__device__ __forceinline__ void fence() { FUSED3D_WGMMA_ASM("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { FUSED3D_WGMMA_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wait() { FUSED3D_WGMMA_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory"); }
// Keeps the compiler from moving an accumulator's reads and writes across the fences and waits.
template <int kRegs>
__device__ __forceinline__ void pin(float (&r)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kRows, int kRegs>
__device__ __forceinline__ void pin(float (&r)[kRows][kRegs]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) pin(r[i]);
}
#endif  // __CUDACC__

}  // namespace wgmma
