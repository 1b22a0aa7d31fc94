"""A stand-in for NVML (``libnvidia-ml.so.1``), built with the C compiler for the tests of this GPU-less machine:
it answers NVML's calls that synth makes (count, name, UUID, compute capability) for the GPUs listed in the
variable ``FAKE_NVML_GPUS`` ("NVIDIA H100 80GB HBM3:9.0,Tesla V100-SXM2-16GB:7.0"), so the code that reads
GPUs through NVML runs exactly as on a GPU machine, in this process and in every process it starts
(``SYNTH_NVML_LIBRARY`` names the library). CUDA itself it does not provide: nothing here can run a kernel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse(int index, char *name, int *major, int *minor) {
    const char *env = getenv("FAKE_NVML_GPUS");
    if (!env) return 0;
    char buf[4096];
    strncpy(buf, env, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    int i = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","), i++) {
        if (i != index) continue;
        char *colon = strrchr(tok, ':');
        if (!colon) return 0;
        *colon = 0;
        if (name) strcpy(name, tok);
        if (major) sscanf(colon + 1, "%d.%d", major, minor);
        return 1;
    }
    return i;
}

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *count) {
    const char *env = getenv("FAKE_NVML_GPUS");
    unsigned int n = 0;
    if (env && *env) { n = 1; for (const char *c = env; *c; c++) if (*c == ',') n++; }
    *count = n;
    return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **handle) {
    *handle = (void *)(size_t)(index + 1);
    return 0;
}
int nvmlDeviceGetName(void *handle, char *name, unsigned int length) {
    char buf[1024] = {0};
    parse((int)(size_t)handle - 1, buf, NULL, NULL);
    snprintf(name, length, "%s", buf);
    return 0;
}
int nvmlDeviceGetUUID(void *handle, char *uuid, unsigned int length) {
    snprintf(uuid, length, "GPU-fake-%04d", (int)(size_t)handle - 1);
    return 0;
}
int nvmlDeviceGetCudaComputeCapability(void *handle, int *major, int *minor) {
    *major = 0; *minor = 0;
    parse((int)(size_t)handle - 1, NULL, major, minor);
    return 0;
}
"""


def build(folder: Path) -> Path:
    """Compile the stand-in into ``folder``; its path (for ``SYNTH_NVML_LIBRARY``)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the fake NVML needs a C compiler (cc or gcc)")
    src, lib = folder / "fake_nvml.c", folder / "libnvidia-ml-fake.so"
    src.write_text(SOURCE)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)], check=True, capture_output=True)
    return lib
