! A solver developer's own Darcy code: -div(a grad u) = f on the unit square, u = 0 on the boundary,
! five-point flux form with arithmetic-mean face permeabilities on the n x n grid that includes the
! boundary (h = 1/(n-1)), and Jacobi-preconditioned conjugate gradients. Fields are x(nx, ny) with
! the boundary rows and columns held at zero. The programs check this operator against the model's
! own residual (piddm residual) before trusting either.
module darcy_solver
  use, intrinsic :: iso_c_binding, only: c_float
  use, intrinsic :: iso_fortran_env, only: int32, real64
  implicit none
  private
  public :: read_fields, write_fields, apply_darcy, darcy_diagonal, pcg, median, rel_l2

  character(len=8), parameter :: MAGIC = "PIDDMF32"

contains

  ! A field file: "PIDDMF32", u32 count, channels, ny, nx, then float32 x(nx, ny, channels, count).
  subroutine read_fields(path, x)
    character(*), intent(in) :: path
    real(c_float), allocatable, intent(out) :: x(:, :, :, :)
    character(len=8) :: magic_read
    integer(int32) :: dims(4)
    integer :: unit, ios
    open (newunit=unit, file=path, access="stream", form="unformatted", status="old", action="read", iostat=ios)
    if (ios /= 0) error stop "cannot open the field file "//path
    read (unit, iostat=ios) magic_read, dims
    if (ios /= 0 .or. magic_read /= MAGIC) error stop path//" is not a piddm field file"
    allocate (x(dims(4), dims(3), dims(2), dims(1)))
    read (unit, iostat=ios) x
    if (ios /= 0) error stop path//" is truncated"
    close (unit)
  end subroutine

  subroutine write_fields(path, x)
    character(*), intent(in) :: path
    real(c_float), intent(in) :: x(:, :, :, :)
    integer :: unit
    open (newunit=unit, file=path, access="stream", form="unformatted", status="replace", action="write")
    write (unit) MAGIC, int([size(x, 4), size(x, 3), size(x, 2), size(x, 1)], int32), x
    close (unit)
  end subroutine

  ! y = A(a) x on the interior (y = 0 on the boundary); A is symmetric positive definite there.
  subroutine apply_darcy(a, x, y)
    real(real64), intent(in) :: a(:, :), x(:, :)
    real(real64), intent(out) :: y(:, :)
    integer :: i, j, n
    real(real64) :: ih2, ae, aw, an, as
    n = size(a, 1)
    ih2 = real(n - 1, real64)**2
    y = 0
    do j = 2, size(a, 2) - 1
      do i = 2, n - 1
        ae = 0.5_real64*(a(i, j) + a(i + 1, j))
        aw = 0.5_real64*(a(i, j) + a(i - 1, j))
        an = 0.5_real64*(a(i, j) + a(i, j + 1))
        as = 0.5_real64*(a(i, j) + a(i, j - 1))
        y(i, j) = -ih2*(ae*(x(i + 1, j) - x(i, j)) - aw*(x(i, j) - x(i - 1, j)) &
                        + an*(x(i, j + 1) - x(i, j)) - as*(x(i, j) - x(i, j - 1)))
      end do
    end do
  end subroutine

  subroutine darcy_diagonal(a, d)
    real(real64), intent(in) :: a(:, :)
    real(real64), intent(out) :: d(:, :)
    integer :: i, j, n
    n = size(a, 1)
    d = 1
    do j = 2, size(a, 2) - 1
      do i = 2, n - 1
        d(i, j) = real(n - 1, real64)**2*0.5_real64*(4*a(i, j) + a(i + 1, j) + a(i - 1, j) + a(i, j + 1) + a(i, j - 1))
      end do
    end do
  end subroutine

  ! Jacobi-PCG from the given x (its boundary is zeroed). Stops at ||b - A x|| <= tols(last) ||b||;
  ! iters(k) / secs(k) are the iteration count and seconds at which tols(k) was first reached
  ! (tols decreasing). b is zero on the boundary.
  subroutine pcg(a, b, x, tols, iters, secs, maxit)
    real(real64), intent(in) :: a(:, :), b(:, :), tols(:)
    real(real64), intent(inout) :: x(:, :)
    integer, intent(out) :: iters(:)
    real(real64), intent(out) :: secs(:)
    integer, intent(in) :: maxit
    real(real64), allocatable :: r(:, :), z(:, :), p(:, :), q(:, :), d(:, :)
    real(real64) :: bnorm, rz, rz_new, alpha, rnorm
    integer :: k, t, nt
    integer(8) :: c0, c, rate
    call system_clock(c0, rate)
    nt = size(tols)
    allocate (r, z, p, q, d, mold=x)
    x(1, :) = 0; x(size(x, 1), :) = 0; x(:, 1) = 0; x(:, size(x, 2)) = 0
    call darcy_diagonal(a, d)
    call apply_darcy(a, x, q)
    r = b - q
    bnorm = norm2(b)
    iters = -1
    secs = -1
    t = 1
    k = 0
    do
      rnorm = norm2(r)
      do while (t <= nt)
        if (rnorm > tols(t)*bnorm) exit
        call system_clock(c)
        iters(t) = k
        secs(t) = real(c - c0, real64)/real(rate, real64)
        t = t + 1
      end do
      if (t > nt .or. k >= maxit) exit
      z = r/d
      rz_new = sum(r*z)
      if (k == 0) then
        p = z
      else
        p = z + (rz_new/rz)*p
      end if
      rz = rz_new
      call apply_darcy(a, p, q)
      alpha = rz/sum(p*q)
      x = x + alpha*p
      r = r - alpha*q
      k = k + 1
    end do
  end subroutine

  real(real64) function median(v)
    real(real64), intent(in) :: v(:)
    real(real64) :: s(size(v)), t
    integer :: i, j, n
    s = v
    n = size(s)
    do i = 2, n
      t = s(i)
      j = i - 1
      do while (j >= 1)
        if (s(j) <= t) exit
        s(j + 1) = s(j)
        j = j - 1
      end do
      s(j + 1) = t
    end do
    if (mod(n, 2) == 1) then
      median = s((n + 1)/2)
    else
      median = 0.5_real64*(s(n/2) + s(n/2 + 1))
    end if
  end function

  real(real64) function rel_l2(x, ref)
    real(real64), intent(in) :: x(:, :), ref(:, :)
    rel_l2 = norm2(x - ref)/norm2(ref)
  end function
end module
