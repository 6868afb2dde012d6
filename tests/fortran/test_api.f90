! The Fortran module end to end. usage: test_api MODEL.onnx
program test_api
  use piddm
  use, intrinsic :: iso_c_binding
  use, intrinsic :: ieee_arithmetic, only: ieee_is_nan
  implicit none
  type(piddm_model) :: m
  type(piddm_options) :: o
  type(piddm_solve_params) :: p
  type(piddm_solve_report) :: rep
  character(len=512) :: path
  real(c_float), allocatable :: u(:, :, :, :), u2(:, :, :, :), r(:, :, :), x(:, :, :, :), one(:, :, :), flat(:, :)
  integer(c_int8_t), allocatable :: mask(:, :, :, :)
  real(c_double) :: ms, hist(7)
  integer :: stat, passed = 0, failed = 0

  call get_command_argument(1, path)
  o = piddm_default_options()
  call check(o%size == c_sizeof(o) .and. o%verify_weights == 1, "default options")
  o%intra_op_threads = 1
  call m%load(trim(path), o)
  call check(m%nc == 2 .and. m%nx == m%ny .and. m%nx > 2, "shape")

  allocate (u(m%nx, m%ny, m%nc, 3), u2(m%nx, m%ny, m%nc, 3), r(m%nx, m%ny, 3), x(m%nx, m%ny, m%nc, 3))
  call m%generate(42_c_int64_t, u)
  call m%generate(42_c_int64_t, u2)
  call check(all(u == u2), "same seed, same bits")
  allocate (one(m%nx, m%ny, m%nc), flat(m%nx*m%ny, m%nc))
  call m%generate(42_c_int64_t, one)
  call check(all(one == u(:, :, :, 1)), "rank 3 is the first sample")
  call m%generate(42_c_int64_t, flat)
  call check(all(reshape(flat, [m%nx, m%ny, m%nc]) == one), "rank 2 is the same memory")
  call m%residual(u, r, ms)
  call check(ms > 0 .and. r(1, 1, 1) == 0, "residual")

  ! inverse problem: all of u observed
  allocate (mask(m%nx, m%ny, m%nc, 3))
  mask = 0
  mask(:, :, 2, :) = 1
  p = m%default_solve_params()
  p%steps = 5
  hist = -1
  call m%solve(u, mask, p, x, rep, loss_history=hist)
  call check(rep%steps == 5 .and. rep%final_loss <= rep%initial_loss, "solve report")
  call check(hist(1) == rep%initial_loss .and. hist(6) == rep%final_loss .and. hist(7) == -1, "loss history")
  call check(.not. c_associated(rep%loss_history), "no dangling history pointer")
  p%steps = -1
  call m%solve(u, mask, p, x, stat=stat)
  call check(stat == PIDDM_ERR_INVALID_ARGUMENT, "negative steps refused")
  p%steps = 5
  call check(all(x(:, :, 2, :) == u(:, :, 2, :)), "observations kept")
  ! the one-call answer from the amortised encoder
  call check(m%has_amortised(), "the test model has the amortised part")
  p%steps = 0
  p%start = PIDDM_START_AMORTISED
  call m%solve(u, mask, p, x, rep)
  call check(rep%steps == 0 .and. ieee_is_nan(rep%initial_loss), "one call: no loss evaluated")
  call check(all(x(:, :, 2, :) == u(:, :, 2, :)), "one call keeps the observations")
  ! the spread of 4 answers: observations kept in the mean, no spread there, some in a
  block
    real(c_float), allocatable :: mean(:, :, :, :), sd(:, :, :, :)
    real(c_double) :: scale(3)
    allocate (mean, sd, mold=x)
    call m%solve_spread(u, mask, 4, p, mean, sd, std_scale=scale)
    call check(all(mean(:, :, 2, :) == u(:, :, 2, :)) .and. all(sd(:, :, 2, :) == 0), "spread: observations kept")
    call check(sum(sd(:, :, 1, :)) > 0 .and. all(scale == 1), "spread: the unobserved a varies, raw std")
    call m%solve_spread(u, mask, 1, p, mean, sd, stat=stat)
    call check(stat == PIDDM_ERR_INVALID_ARGUMENT, "spread: one answer refused")
  end block
  p%start = 9
  call m%solve(u, mask, p, x, stat=stat)
  call check(stat == PIDDM_ERR_INVALID_ARGUMENT, "unknown start refused")
  p%start = PIDDM_START_AUTO
  p%steps = 5

  ! errors come back in stat with the message available
  call m%residual(u, r(:, :, 1:2), ms, stat=stat)
  call check(stat == PIDDM_ERR_SIZE, "wrong residual size")
  call check(len(piddm_last_error_message()) > 0, "message")
  u(3, 3, 1, 1) = ieee_nan()
  call m%residual(u, r, ms, stat=stat)
  call check(stat == PIDDM_ERR_NONFINITE, "NaN fields")
  block
    type(piddm_model) :: bad
    call bad%load("/nonexistent/model.onnx", stat=stat)
    call check(stat == PIDDM_ERR_IO, "missing file")
  end block
  block
    type(piddm_options) :: raw
    type(piddm_model) :: bad
    call bad%load(trim(path), raw, stat=stat)
    call check(stat == PIDDM_ERR_ABI, "options without piddm_default_options refused")
  end block
  u(3, 3, 1, 1) = 0
  ! copies share the model and each frees its own handle: no double free at scope exit
  block
    type(piddm_model) :: a, b
    a = m
    b = a
    b = b
    call check(c_associated(a%handle) .and. c_associated(b%handle), "copies hold handles")
    call a%generate(42_c_int64_t, u2)
    call b%generate(42_c_int64_t, x)
    call check(all(u2 == x) .and. b%nx == m%nx, "copies generate the same")
    call a%free()
    call b%generate(42_c_int64_t, x)
    call check(all(u2 == x), "a copy outlives the other's free")
  end block
  call m%generate(42_c_int64_t, x)
  call check(all(u2 == x), "the original outlives its copies")

  call m%free()
  call m%free()
  write (*, '(i0," passed, ",i0," failed")') passed, failed
  if (failed /= 0) error stop 1
contains
  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (ok) then
      passed = passed + 1
    else
      failed = failed + 1
      write (*, '("FAIL: ",a)') what
    end if
  end subroutine
  real(c_float) function ieee_nan()
    use, intrinsic :: ieee_arithmetic
    ieee_nan = ieee_value(0.0_c_float, ieee_quiet_nan)
  end function
end program
