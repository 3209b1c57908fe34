// One route per screen, each its own chunk (loaded on demand), under /console/. gridpointsd
// answers index.html for any path without an extension. The dashboard is full screen, outside
// the console's frame. A screen the person's roles do not cover sends them to their first one.
import { createRouter, createWebHistory } from 'vue-router';
import { loggedIn } from './stores/session';
import { canSee, firstScreen, type Screen } from './roles';
import LoginView from './views/login/LoginView.vue';

export const router = createRouter({
  history: createWebHistory(import.meta.env.BASE_URL),
  routes: [
    { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
    { path: '/dashboard', name: 'dashboard', component: () => import('./views/dashboard/DashboardView.vue'), meta: { screen: 'dashboard' } },
    {
      path: '/',
      component: () => import('./components/ConsoleLayout.vue'),
      children: [
        { path: '', name: 'home', component: () => import('./views/home/HomeView.vue') },
        { path: 'people', name: 'people', component: () => import('./views/people/PeopleView.vue'), meta: { screen: 'people' } },
        { path: 'people/import', name: 'import', component: () => import('./views/import/ImportView.vue'), meta: { screen: 'people' } },
        { path: 'tasks', name: 'tasks', component: () => import('./views/tasks/TasksView.vue'), meta: { screen: 'tasks' } },
        { path: 'tasks/new', name: 'publish', component: () => import('./views/publish/PublishView.vue'), meta: { screen: 'tasks' } },
        { path: 'tasks/:id(\\d+)', name: 'task', component: () => import('./views/task/TaskView.vue'), props: true, meta: { screen: 'tasks' } },
        { path: 'review', name: 'review', component: () => import('./views/review/ReviewView.vue'), meta: { screen: 'review' } },
        { path: 'budgets', name: 'budgets', component: () => import('./views/budgets/BudgetsView.vue'), meta: { screen: 'budgets' } },
        { path: 'merchants', name: 'merchants', component: () => import('./views/merchants/MerchantsView.vue'), meta: { screen: 'merchants' } },
        { path: 'audit', name: 'audit', component: () => import('./views/audit/AuditView.vue'), meta: { screen: 'audit' } },
        { path: 'shop', name: 'shop', component: () => import('./views/shop/ShopView.vue'), meta: { screen: 'shop' } },
      ],
    },
    { path: '/:rest(.*)*', redirect: '/' },
  ],
});

router.beforeEach((to) => {
  if (to.meta.public) return true;
  if (!loggedIn()) return { name: 'login', query: to.fullPath !== '/' ? { next: to.fullPath } : {} };
  const screen = to.meta.screen as Screen | undefined;
  if (screen && !canSee(screen)) return { name: 'home' };
  if (to.name === 'home') {
    const s = firstScreen();
    if (s) return { name: s };
  }
  return true;
});
