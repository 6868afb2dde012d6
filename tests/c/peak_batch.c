/* One piddm_generate at a given batch, for measuring its peak resident memory:
 *   cc -O1 -Iinclude tests/c/peak_batch.c -Ltarget/release -lpiddm \
 *      -Wl,-rpath,$PWD/target/release -o peak_batch
 *   /usr/bin/time -f "%e s, max RSS %M KB" ./peak_batch examples/models/darcy32.onnx 4096
 * usage: peak_batch MODEL BATCH */
#include "piddm.h"
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    piddm_model *m = NULL;
    if (piddm_model_load(argv[1], NULL, &m) != PIDDM_OK) {
        fprintf(stderr, "%s\n", piddm_last_error());
        return 1;
    }
    size_t c, ny, nx;
    piddm_model_shape(m, &c, &ny, &nx);
    const size_t b = (size_t)strtoul(argv[2], NULL, 10), n = b * c * ny * nx;
    float *x = malloc(n * sizeof(float));
    if (!x) return 1;
    piddm_status s = piddm_generate(m, 1, b, x, n);
    printf("batch %zu: %s %s\n", b, piddm_status_name(s), piddm_last_error());
    free(x);
    piddm_model_free(&m);
    return s != PIDDM_OK;
}
