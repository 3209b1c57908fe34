// One route per screen, each loaded on demand (its own chunk), but for the login screen. History mode under /app/; gridpointsd answers index.html for any path without an
// extension, and the service worker does the same offline.
import { createRouter, createWebHistory } from 'vue-router';
import { loggedIn } from './stores/session';
// The login screen is the first screen of a new phone: part of the entry chunk, so that a slow
// link fetches one script, not a script and then the screen.
import LoginView from './views/login/LoginView.vue';

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  // A new screen starts at its top (back returns to where the worker was).
  scrollBehavior: (_to, _from, saved) => saved ?? { top: 0 },
  routes: [
    { path: '/', redirect: '/tasks' },
    { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
    { path: '/bind', name: 'bind', component: () => import('./views/bind/BindView.vue'), meta: { public: true } },
    { path: '/tasks', name: 'tasks', component: () => import('./views/tasks/TasksView.vue'), meta: { tab: true } },
    { path: '/tasks/:id(\\d+)', name: 'task', component: () => import('./views/task/TaskView.vue'), props: true },
    { path: '/assignments/:id(\\d+)/report', name: 'report', component: () => import('./views/report/ReportView.vue'), props: true },
    { path: '/reports', name: 'reports', component: () => import('./views/reports/ReportsView.vue'), meta: { tab: true } },
    { path: '/points', name: 'points', component: () => import('./views/points/PointsView.vue'), meta: { tab: true } },
    { path: '/mall', name: 'mall', component: () => import('./views/mall/MallView.vue'), meta: { tab: true } },
    { path: '/vouchers', name: 'vouchers', component: () => import('./views/vouchers/VouchersView.vue') },
    { path: '/vouchers/:id(\\d+)', name: 'voucher', component: () => import('./views/voucher/VoucherView.vue'), props: true },
    { path: '/paycode', name: 'paycode', component: () => import('./views/paycode/PayCodeView.vue') },
    { path: '/visits', name: 'visits', component: () => import('./views/visits/VisitsView.vue'), meta: { tab: true } },
    { path: '/visits/:id(\\d+)', name: 'visit', component: () => import('./views/visit/VisitView.vue'), props: true },
    { path: '/me', name: 'me', component: () => import('./views/me/MeView.vue'), meta: { tab: true } },
    { path: '/:rest(.*)*', redirect: '/tasks' },
  ],
});

router.beforeEach((to) => {
  if (to.meta.public) return true;
  if (!loggedIn()) return { name: 'login', query: to.fullPath !== '/tasks' ? { next: to.fullPath } : {} };
  return true;
});
