#include <piddm.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    piddm_model *m = NULL;
    if (argc < 2 || piddm_model_load(argv[1], NULL, &m) != PIDDM_OK) { fprintf(stderr, "%s\n", piddm_last_error()); return 1; }
    size_t c, ny, nx;
    piddm_model_shape(m, &c, &ny, &nx);
    float *x = malloc(c * ny * nx * sizeof(float));
    int ok = piddm_generate(m, 1, 1, x, c * ny * nx) == PIDDM_OK;
    printf("consumer_c: %zu x %zu x %zu, generate %s\n", c, ny, nx, ok ? "ok" : piddm_last_error());
    free(x);
    piddm_model_free(&m);
    return !ok;
}
