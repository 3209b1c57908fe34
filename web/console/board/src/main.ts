import { createApp } from 'vue';
import './board.css';
import Board from './BoardView.vue';

createApp(Board).mount('#app');
