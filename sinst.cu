#include "/work/main/laplexops/backends/laplex_scan.cu"
void* const a[] = { (void*)&laplex::laplex_tiles<float, float, float, float, int, false> };
