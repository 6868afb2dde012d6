/* The header compiles alone, twice in one unit, under -std=c99 -Wall -Wextra -Werror -pedantic. */
#include "piddm.h"
#include "piddm.h"
int main(void) { return piddm_abi_version() == PIDDM_ABI_VERSION ? 0 : 1; }
